//! The regular expressions the OpenAPI document gives for each validated field accept exactly
//! what the validators accept: checked on many generated strings, rich in the characters where
//! the two could disagree (whitespace of every kind, NUL, `@`, dots, digits, non-ASCII).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use fancy_regex::Regex;
use newspaper_domain::{CONTENT_PATTERN, Email, Password, PostTitle, parse_content};

/// A small deterministic generator, so failures reproduce.
struct Strings(u64);

impl Strings {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn string(&mut self, alphabet: &[char], max_len: usize) -> String {
        let len = (self.next() as usize) % (max_len + 1);
        (0..len).map(|_| alphabet[(self.next() as usize) % alphabet.len()]).collect()
    }
}

const TRICKY: &[char] = &[
    'a', 'B', 'z', '0', '7', ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{a0}',
    '\u{1680}', '\u{2003}', '\u{2028}', '\u{202f}', '\u{3000}', '\u{feff}', '\u{180e}', '\0', '@',
    '.', '-', '_', '+', '!', '\'', 'é', '中', '🙂', 'x',
];

fn agree(name: &str, pattern: &str, accepts: impl Fn(&str) -> bool, samples: &[String]) {
    let regex = Regex::new(pattern).unwrap_or_else(|e| panic!("{name}: {e}"));
    for sample in samples {
        assert_eq!(
            regex.is_match(sample).unwrap(),
            accepts(sample),
            "{name}: the pattern and the validator disagree on {sample:?}"
        );
    }
}

#[test]
fn titles_and_content() {
    let mut strings = Strings(0x5eed_1234_abcd_0001);
    let mut samples: Vec<String> = (0..20_000).map(|_| strings.string(TRICKY, 12)).collect();
    for len in [199, 200, 201, 202] {
        samples.push("t".repeat(len));
        samples.push(format!("  {}  ", "t".repeat(len)));
        samples.push(format!("\u{85}{}\u{3000}", "é".repeat(len)));
    }
    agree("title", PostTitle::PATTERN, |s| PostTitle::parse(s).is_ok(), &samples);
    agree("content", CONTENT_PATTERN, |s| parse_content(s).is_ok(), &samples);
}

#[test]
fn emails() {
    let mut strings = Strings(0x5eed_1234_abcd_0002);
    let parts: &[char] =
        &['a', 'Z', '9', '.', '-', '@', '_', '+', '\'', 'é', ' ', '\u{85}', '\t', '!'];
    let mut samples: Vec<String> = (0..30_000)
        .map(|_| {
            format!(
                "{}@{}.{}",
                strings.string(parts, 6),
                strings.string(parts, 6),
                strings.string(parts, 4)
            )
        })
        .collect();
    samples.extend((0..5_000).map(|_| strings.string(TRICKY, 10)));
    for local in [63, 64, 65] {
        samples.push(format!("{}@example.com", "a".repeat(local)));
    }
    for label in [62, 63, 64] {
        samples.push(format!("a@{}.com", "b".repeat(label)));
    }
    samples.push(format!("a@{}.com", vec!["b".repeat(63); 4].join(".")));
    samples.push(format!(" a@{}.co ", vec!["b".repeat(61); 4].join(".")));
    agree("email", Email::PATTERN, |s| Email::parse(s).is_ok(), &samples);
}

#[test]
fn passwords_as_far_as_the_pattern_goes() {
    let mut strings = Strings(0x5eed_1234_abcd_0003);
    let digits: &[char] = &['0', '1', '9', 'a', '\0', '٣', ' '];
    let samples: Vec<String> = (0..20_000).map(|_| strings.string(digits, 10)).collect();
    // The pattern states the character rules; lengths are the schema's minLength/maxLength,
    // and common passwords or ones like the email are refused beyond what a pattern says.
    let shape_ok = |s: &str| {
        Password::parse(s, None).is_ok()
            || Password::parse(s, None).unwrap_err().iter().all(|p| {
                p.0.contains("too short")
                    || p.0.contains("too common")
                    || p.0.contains("no more than")
            }) && !s.is_empty()
    };
    agree("password", Password::PATTERN, shape_ok, &samples);
}
