//! `nas models list` and `nas models fetch`.

use crate::cli::ModelsCommand;
use crate::commands::plugins::print_table;
use crate::commands::{Failure, UsageContext};

/// Runs a `nas models` command.
pub fn run(cmd: ModelsCommand) -> Result<(), Failure> {
    let dir = crate::paths::models_dir();
    match cmd {
        ModelsCommand::List => {
            let rows: Vec<[String; 4]> = nas_llm_local::list_models(&dir)
                .into_iter()
                .map(|m| {
                    [
                        m.model.name.to_string(),
                        format!("{:.0} MB", m.model.size_bytes as f64 / 1e6),
                        if m.present { "present".into() } else { "absent".into() },
                        m.path.display().to_string(),
                    ]
                })
                .collect();
            print_table(&["MODEL", "SIZE", "STATUS", "PATH"], &rows);
            Ok(())
        }
        ModelsCommand::Fetch { name } => {
            if nas_llm_local::find_model(&name).is_none() {
                let known: Vec<&str> = nas_llm_local::list_models(&dir).iter().map(|m| m.model.name).collect();
                return Err(Failure::Usage(anyhow::anyhow!(
                    "no model `{name}` in the catalogue; known: {}",
                    known.join(", ")
                )));
            }
            let opts = nas_llm_local::FetchOptions { verbose: true, ..Default::default() };
            let path = nas_llm_local::fetch_model(&name, &dir, &opts).run_failed()?;
            println!("{}", path.display());
            Ok(())
        }
    }
}
