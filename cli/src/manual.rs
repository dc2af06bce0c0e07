//! `prunus completions` and `prunus man`: shell completions and man pages,
//! generated from the same clap definition that parses the command line.

use std::path::PathBuf;

use clap::Args;
use clap_complete::Shell;
use clap_mangen::Man;

use crate::error::Error;

/// Arguments of `prunus completions`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  prunus completions bash > ~/.local/share/bash-completion/completions/prunus
  prunus completions zsh > ~/.zfunc/_prunus        # with fpath+=~/.zfunc before compinit
  prunus completions fish > ~/.config/fish/completions/prunus.fish")]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub(crate) shell: Shell,
}

/// Arguments of `prunus man`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  prunus man | man -l -                            # read it now
  prunus man --dir ~/.local/share/man/man1         # install prunus.1, prunus-prune.1, ...")]
pub(crate) struct ManArgs {
    /// Write one page per command (prunus.1, prunus-prune.1,
    /// prunus-bench-select.1, ...) into this existing folder instead of
    /// printing the top page; each file is written atomically.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

/// Prints the completion script of `command` for `args.shell`.
pub(crate) fn completions(args: &CompletionsArgs, mut command: clap::Command) -> Result<(), Error> {
    let name = command.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut out);
    print_bytes(&out)
}

/// Prints the man page of `command`, or writes every page into `args.dir`.
pub(crate) fn man(args: &ManArgs, command: clap::Command) -> Result<(), Error> {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let Some(dir) = &args.dir else {
        return print_bytes(&render(&Man::new(command))?);
    };
    if !dir.is_dir() {
        return Err(Error::argument(
            "--dir",
            dir.display(),
            "an existing folder",
        ));
    }
    let mut pages = Vec::new();
    collect(command, &mut pages);
    for man in &pages {
        let path = dir.join(man.get_filename());
        let roff = render(man)?;
        let text = String::from_utf8(roff)
            .map_err(|e| Error::SelfCheck(format!("the man page is not UTF-8: {e}")))?;
        prunus_lab::write_text_atomic(&path, &text)?;
    }
    eprintln!("wrote {} pages to {}", pages.len(), dir.display());
    Ok(())
}

/// The pages of `command` and of every visible subcommand, depth first.
fn collect(command: clap::Command, pages: &mut Vec<Man>) {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub.clone(), pages);
    }
    pages.push(Man::new(command));
}

/// The page as roff.
fn render(man: &Man) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    man.render(&mut out)
        .map_err(|e| Error::system("render the man page", e))?;
    Ok(out)
}

/// Writes `bytes` to stdout.
fn print_bytes(bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::system("write to stdout", e))
}
