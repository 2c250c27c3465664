//! One module per `nas` command.

pub mod compare;
pub mod data;
pub mod eval;
pub mod export;
pub mod models;
pub mod plugins;
pub mod report;
pub mod run;
