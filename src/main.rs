//! The `dmdeleg` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use dmdeleg::dm::tnds::TndsDocument;
use dmdeleg::dm::tree::{DmTree, TreeLimits};

/// OMA DM server-to-server delegation: hand the management of devices from one DM server to
/// another, wholly or for some subtrees, and undo it exactly when anything fails.
#[derive(Parser)]
#[command(name = "dmdeleg", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Work with TNDS documents (DM tree serialisations) and DDF files.
    Tnds {
        #[command(subcommand)]
        action: TndsAction,
    },
}

#[derive(Subcommand)]
enum TndsAction {
    /// Check that FILE is a TNDS document or DDF and load it as a DM tree; prints the nodes
    /// it holds, or says what is wrong and where.
    Check {
        /// The TNDS or DDF file.
        file: PathBuf,
    },
    /// Print FILE as indented TNDS.
    Print {
        /// The TNDS or DDF file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmdeleg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => {
            // The console and the lab arrive with the engine; until then, say what exists.
            use clap::CommandFactory as _;
            Cli::command().print_help()?;
            println!();
            Ok(())
        }
        Some(Command::Tnds { action }) => match action {
            TndsAction::Check { file } => {
                let doc = read_tnds(&file)?;
                let tree = DmTree::from_tnds(&doc, TreeLimits::default())
                    .with_context(|| format!("{} does not load as a DM tree", file.display()))?;
                println!(
                    "{}: TNDS {} with {} nodes; loads as a DM tree of {} nodes",
                    file.display(),
                    doc.ver_dtd,
                    doc.node_count(),
                    tree.len()
                );
                Ok(())
            }
            TndsAction::Print { file } => {
                let doc = read_tnds(&file)?;
                print!("{}", doc.to_xml_pretty());
                Ok(())
            }
        },
    }
}

fn read_tnds(file: &PathBuf) -> anyhow::Result<TndsDocument> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    TndsDocument::from_xml(&bytes).with_context(|| format!("{} is not TNDS", file.display()))
}
