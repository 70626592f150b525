//! Proves that the README's curl walk-through prints the output the README shows. The test
//! reads the walk-through's shell blocks and their output blocks from README.md, runs the
//! blocks in order with bash against the real binary on a fresh file, and compares.
//!
//! The only change to the commands is the address: the server listens on a free port instead
//! of 127.0.0.1:8080. When comparing, every UUID counts as equal to every other, because eTags
//! are random, and a line marked `(shortened)` matches when its pieces between `…` appear in
//! order. The test needs `bash`, `curl`, `sed` and `tr` on the PATH.

mod common;

use std::process::Command;

use common::start_fresh;

/// Marks a line of an output block that the README cut with `…`.
const SHORTENED: &str = "  (shortened)";

#[test]
fn readme_walkthrough_output() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let steps = walkthrough_steps(&readme);
    assert!(
        steps.len() >= 5,
        "the walk-through has {} steps",
        steps.len()
    );

    let (_dir, server) = start_fresh(&[]);
    let address = server.addr.to_string();
    let mut script = String::from("set -u\n");
    for (index, step) in steps.iter().enumerate() {
        script.push_str(&format!("echo '@@@ step {index}'\n"));
        script.push_str(&step.commands.replace("127.0.0.1:8080", &address));
    }
    let output = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("run bash; the walk-through test needs bash and curl");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the walk-through failed: {stderr}\n{stdout}"
    );

    let printed: Vec<&str> = stdout.split("@@@ step ").skip(1).collect();
    assert_eq!(printed.len(), steps.len(), "{stdout}");
    for (index, (step, printed)) in steps.iter().zip(printed).enumerate() {
        let printed = printed.split_once('\n').map_or("", |(_, rest)| rest);
        let got: Vec<&str> = printed.lines().collect();
        let want: Vec<&str> = step.output.lines().collect();
        assert_eq!(got.len(), want.len(), "step {index} printed:\n{printed}");
        for (got, want) in got.iter().zip(&want) {
            assert!(
                line_matches(got, want),
                "step {index}:\n got  {got}\n want {want}"
            );
        }
    }
}

/// A shell block of the walk-through and the output block after it.
struct Step {
    commands: String,
    output: String,
}

/// Reads the walk-through section's code blocks: the first starts the server and is skipped,
/// the second sets variables and prints nothing, and every later shell block is followed by
/// its output block.
fn walkthrough_steps(readme: &str) -> Vec<Step> {
    let start = readme
        .find("## Walk-through")
        .expect("a Walk-through section");
    let section = &readme[start..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];

    // Splitting at the fences leaves the text between blocks at even positions.
    let blocks: Vec<(&str, &str)> = section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|block| block.split_once('\n').expect("a code block"))
        .collect();
    assert_eq!(
        blocks[0],
        ("sh", "cargo run --release -- serve\n"),
        "the first block"
    );

    let mut steps = vec![Step {
        commands: blocks[1].1.to_owned(),
        output: String::new(),
    }];
    for pair in blocks[2..].chunks(2) {
        let [(language, commands), (output_language, output)] = pair else {
            panic!("a shell block without its output block");
        };
        assert_eq!(*language, "sh", "a command block is marked sh");
        assert_eq!(*output_language, "", "an output block has no language");
        steps.push(Step {
            commands: (*commands).to_owned(),
            output: (*output).to_owned(),
        });
    }
    steps
}

fn line_matches(got: &str, want: &str) -> bool {
    let (got, want) = (mask_uuids(got), mask_uuids(want));
    let Some(want) = want.strip_suffix(SHORTENED) else {
        return got == want;
    };
    let pieces: Vec<&str> = want.split('…').collect();
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !got.starts_with(first) || !got.ends_with(last) || got.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &got[first.len()..got.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Replaces every hyphenated UUID with `UUID`.
fn mask_uuids(line: &str) -> String {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    const LENGTH: usize = 36;
    let is_uuid = |candidate: &[u8]| {
        let mut position = 0;
        GROUPS.iter().enumerate().all(|(index, length)| {
            let group = &candidate[position..position + length];
            position += length + 1;
            let hex = group.iter().all(u8::is_ascii_hexdigit);
            hex && (index == 4 || candidate[position - 1] == b'-')
        })
    };
    let bytes = line.as_bytes();
    let mut masked = String::new();
    let mut index = 0;
    while index < bytes.len() {
        if index + LENGTH <= bytes.len() && is_uuid(&bytes[index..index + LENGTH]) {
            masked.push_str("UUID");
            index += LENGTH;
        } else {
            let character = line[index..]
                .chars()
                .next()
                .expect("index is a char boundary");
            masked.push(character);
            index += character.len_utf8();
        }
    }
    masked
}
