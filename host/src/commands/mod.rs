//! One module per `nas` command.

pub mod data;
pub mod eval;
pub mod models;
pub mod plugins;
pub mod run;
