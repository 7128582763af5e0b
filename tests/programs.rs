//! Every program the code and the tests start is one that `scripts/setup.sh` installs (its
//! `PROGRAMS`, checked on PATH after installing) or one started only when present
//! (`OPTIONAL_PROGRAMS`): a fresh machine set up by `make setup` passes `make test`. The
//! sources are scanned for `Command::new("...")` (any alias: `StdCommand::new`, ...) and for
//! the commands of `sh -c` / `bash -c` strings.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The words of the bash array `NAME=( ... )` in `script` (comments left out).
fn bash_array(script: &str, name: &str) -> Vec<String> {
    let start = script
        .lines()
        .position(|l| l.starts_with(&format!("{name}=(")))
        .unwrap_or_else(|| panic!("scripts/setup.sh declares no {name}=(...)"));
    let mut words = Vec::new();
    for (i, line) in script.lines().skip(start).enumerate() {
        let line = line.split('#').next().unwrap_or("");
        let line = if i == 0 {
            line.split_once('(').map_or("", |(_, r)| r)
        } else {
            line
        };
        let (body, done) = match line.split_once(')') {
            Some((b, _)) => (b, true),
            None => (line, false),
        };
        words.extend(body.split_whitespace().map(str::to_string));
        if done {
            return words;
        }
    }
    panic!("{name}=( is not closed in scripts/setup.sh");
}

/// The Rust string literal starting at `s` (after its opening quote), unescaped enough for
/// program names and shell lines; None when it does not end.
fn literal(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                '\n' => {
                    // A line continuation: the next line's leading blanks are skipped.
                    let rest: String = chars.collect();
                    return literal(rest.trim_start()).map(|r| out + &r);
                }
                e => out.push(e),
            },
            c => out.push(c),
        }
    }
    None
}

/// Shell words that are not programs: builtins and keywords.
const SHELL_BUILTINS: &[&str] = &[
    "exec", "ulimit", "cd", "export", "set", "unset", "echo", "printf", "test", "[", "true",
    "false", "read", "wait", "trap", "if", "then", "else", "fi", "for", "do", "done", "while", ":",
    ".", "source", "eval", "exit", "return", "umask",
];

/// The programs a shell line starts: the first word of each command.
fn shell_programs(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for cmd in line.split(['&', '|', ';', '\n', '(', ')', '`']) {
        let mut words = cmd.split_whitespace().skip_while(|w| w.contains('='));
        let Some(w) = words.next() else { continue };
        if w.starts_with(['$', '"', '\'', '<', '>']) || SHELL_BUILTINS.contains(&w) {
            continue;
        }
        out.push(w.to_string());
    }
    out
}

/// The programs `source` starts: `Command::new("prog")`, and for `sh`/`bash`, the commands
/// of the `-c` string that follows.
fn programs_started(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let needle = "Command::new(";
    let mut from = 0;
    while let Some(i) = source[from..].find(needle) {
        let at = from + i + needle.len();
        from = at;
        let rest = source[at..].trim_start();
        let Some(lit) = rest.strip_prefix('"') else {
            continue; // a path (the binary under test, current_exe): not a program on PATH
        };
        let Some(prog) = literal(lit) else { continue };
        if prog == "sh" || prog == "bash" {
            // `.arg("-c")` / `args(["-c", ...` right after (within a few lines).
            let near = &rest[..rest.char_indices().nth(200).map_or(rest.len(), |(i, _)| i)];
            if let Some(c) = near.find("\"-c\"") {
                // The next argument, when it is a literal (`, "..."` or `).arg("...")`).
                let after = rest[c + 4..].trim_start();
                let after = after
                    .strip_prefix(',')
                    .or_else(|| after.strip_prefix(")"))
                    .map(|a| a.trim_start())
                    .map(|a| a.strip_prefix(".arg(").unwrap_or(a).trim_start());
                if let Some(line) = after.and_then(|a| a.strip_prefix('"')).and_then(literal) {
                    out.extend(shell_programs(&line));
                }
            }
        }
        out.push(prog);
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if !(name == "target" || name.starts_with('.') || name == "fixtures") {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_scanner_finds_programs_in_commands_and_shell_lines() {
    let src = r#"
        let a = std::process::Command::new("ffprobe").arg("-v");
        let b = StdCommand::new( "mkfifo" );
        let c = Command::new(exe).arg("x");
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -d 2000000 && FOO=1 timeout 5 exec \"$0\" | grep x; ls")
            .arg(&bin);
        Command::new("sh").args(["-c", "nproc; kill -INT $0", &pid]);
        Command::new("sh").args(["-c", line, "not a program"]);
    "#;
    let found = programs_started(src);
    assert_eq!(
        found,
        ["ffprobe", "mkfifo", "timeout", "grep", "ls", "sh", "nproc", "kill", "sh", "sh"],
        "{found:?}"
    );
}

#[test]
fn setup_installs_every_program_the_code_and_the_tests_start() {
    let root = Path::new(ROOT);
    let setup = std::fs::read_to_string(root.join("scripts/setup.sh")).unwrap();
    let mut known: BTreeSet<String> = bash_array(&setup, "PROGRAMS").into_iter().collect();
    known.extend(bash_array(&setup, "OPTIONAL_PROGRAMS"));
    // setup.sh checks each guaranteed program on PATH after installing.
    assert!(
        setup.contains(r#"for prog in "${PROGRAMS[@]}"; do"#)
            && setup.contains(r#"command -v "$prog""#),
        "scripts/setup.sh no longer checks its PROGRAMS on PATH"
    );
    let mut files = Vec::new();
    for d in [
        "src",
        "cli",
        "gst-plugin",
        "tests",
        "benchmarks",
        "examples",
        "tools",
    ] {
        if root.join(d).is_dir() {
            rust_files(&root.join(d), &mut files);
        }
    }
    rust_files_top(root, &mut files);
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // This file's own examples are not programs it starts.
        if f.ends_with("tests/programs.rs") {
            continue;
        }
        for p in programs_started(&text) {
            seen.insert(p.clone());
            if !known.contains(&p) {
                missing.push(format!(
                    "{} starts `{p}`",
                    f.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "programs that scripts/setup.sh does not install (add the package to APT_PACKAGES and \
         the program to PROGRAMS): {missing:?}"
    );
    // The scan sees the programs the tests are known to start.
    for p in ["ffmpeg", "kill", "gst-launch-1.0"] {
        assert!(seen.contains(p), "the scan found no `{p}`: {seen:?}");
    }
}

/// build.rs and other .rs files at the top of the workspace.
fn rust_files_top(root: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}
