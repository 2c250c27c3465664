//! One module per `nas` command.

pub mod plugins;
pub mod run;
