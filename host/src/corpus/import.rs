//! Training sets the user already has: a `nas export` corpus
//! (`corpus/train.jsonl`, chat `messages` whose last message is the
//! assistant's answer) or their own JSONL, one example a line, either in
//! that chat format or as [`TrainingExample`]s (`messages`, `answer`,
//! optional `source`). Blank lines are skipped; anything else that is not an
//! example is an error naming the file and line.

use std::io::BufRead;
use std::path::Path;

use nas_plugin_api::{ChatMessage, ChatRole, TrainingExample};
use serde::Deserialize;

use super::CorpusError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    answer: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

/// One example read from a line of JSONL: `Err` says what is wrong with it.
pub fn parse_line(text: &str) -> Result<TrainingExample, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut messages = line.messages;
    let answer = match line.answer {
        Some(answer) => {
            if messages.last().is_some_and(|m| m.role == ChatRole::Assistant) {
                return Err("both an `answer` and a last message from the assistant: give one".into());
            }
            answer
        }
        None => match messages.pop() {
            Some(m) if m.role == ChatRole::Assistant => m.content,
            Some(m) => {
                return Err(format!(
                    "the last message is the {}'s; the chat format ends with the assistant's answer (or give `answer`)",
                    role_name(m.role)
                ))
            }
            None => return Err("`messages` is empty".into()),
        },
    };
    if answer.trim().is_empty() {
        return Err("the answer is empty".into());
    }
    if !messages.iter().any(|m| m.role == ChatRole::User) {
        return Err("no user message before the answer".into());
    }
    if let Some(m) = messages.iter().find(|m| m.role == ChatRole::Assistant) {
        return Err(format!(
            "an assistant message before the last (\"{}\"): one example is one prompt and one answer",
            nas_plugin_api::text::truncate_chars(&m.content, 40)
        ));
    }
    Ok(TrainingExample { messages, answer, source: line.source.unwrap_or_default() })
}

fn role_name(role: ChatRole) -> &'static str {
    match role {
        ChatRole::System => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
    }
}

/// Every example of a JSONL file, each with its line number (from 1); an
/// example without a `source` gets `file:<path>:<line>`.
pub fn read_jsonl(path: &Path) -> Result<Vec<(TrainingExample, usize)>, CorpusError> {
    let file = std::fs::File::open(path).map_err(|source| CorpusError::Io { path: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line =
            line.map_err(|e| CorpusError::Malformed { path: path.to_path_buf(), line: n, message: e.to_string() })?;
        if line.trim().is_empty() {
            continue;
        }
        let mut example = parse_line(&line).map_err(|message| CorpusError::Malformed {
            path: path.to_path_buf(),
            line: n,
            message,
        })?;
        if example.source.is_empty() {
            example.source = format!("file:{}:{n}", path.display());
        }
        out.push((example, n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_are_read() {
        let chat = r#"{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "```python\nclass Net: pass\n```"}]}"#;
        let e = parse_line(chat).expect("chat format");
        assert_eq!(e.messages, vec![ChatMessage::system("s"), ChatMessage::user("u")]);
        assert!(e.answer.contains("class Net"));
        let own = r#"{"messages": [{"role": "user", "content": "u"}], "answer": "a", "source": "mine"}"#;
        let e = parse_line(own).expect("example format");
        assert_eq!((e.answer.as_str(), e.source.as_str()), ("a", "mine"));
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        for (line, needle) in [
            ("{\"messages\": [", "EOF"),
            ("[1, 2]", "invalid type"),
            ("{\"messages\": []}", "empty"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}]}", "the user's"),
            ("{\"messages\": [{\"role\": \"robot\", \"content\": \"u\"}], \"answer\": \"a\"}", "robot"),
            ("{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}], \"answer\": \"a\"}", "no user message"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}], \"answer\": \" \"}", "empty"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}], \"answer\": \"a\", \"extra\": 1}", "extra"),
        ] {
            let err = parse_line(line).expect_err(line);
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("mine.jsonl");
        let good = r#"{"messages": [{"role": "user", "content": "u"}], "answer": "a"}"#;
        std::fs::write(&path, format!("{good}\n\n{good}\n{{\"messages\": 3}}\n")).expect("write");
        let err = read_jsonl(&path).expect_err("line 4 is malformed");
        assert!(err.to_string().starts_with(&format!("{}:4: ", path.display())), "{err}");
        std::fs::write(&path, format!("{good}\n\n{good}\n")).expect("write");
        let read = read_jsonl(&path).expect("reads");
        assert_eq!(read.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(read[1].0.source, format!("file:{}:3", path.display()));
    }
}
