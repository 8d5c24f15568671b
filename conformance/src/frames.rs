//! Renders Media Streams frames for transcripts: long media payloads are abbreviated (by
//! reference to the caller's frame that carried them, or by length and hash) and runs of
//! similar frames are collapsed, so a 319-frame call stays a readable snapshot.
use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Payloads up to this many characters are shown as they are.
pub const SHORT_PAYLOAD: usize = 24;

/// Runs of at least this many byte-identical relayed media frames are collapsed.
const COLLAPSE_RUN: usize = 4;

fn json(frame: &str) -> Option<serde_json::Value> {
    serde_json::from_str(frame).ok()
}

/// The `event` of a frame, or `invalid` when it has none.
pub fn event(frame: &str) -> String {
    json(frame)
        .and_then(|v| v["event"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "invalid".to_owned())
}

/// The payload of a `media` frame.
pub fn media_payload(frame: &str) -> Option<String> {
    let v = json(frame)?;
    (v["event"] == "media")
        .then(|| v["media"]["payload"].as_str().map(str::to_owned))
        .flatten()
}

/// The name of a `mark` frame.
pub fn mark_name(frame: &str) -> Option<String> {
    let v = json(frame)?;
    (v["event"] == "mark")
        .then(|| v["mark"]["name"].as_str().map(str::to_owned))
        .flatten()
}

/// `frame` with its media payload shown as `label`.
fn with_payload(frame: &str, payload: &str, label: &str) -> String {
    frame.replacen(&format!("\"{payload}\""), &format!("\"{label}\""), 1)
}

/// A payload by length and the start of its SHA-256.
fn hashed(payload: &str) -> String {
    let digest = hex::encode(Sha256::digest(payload.as_bytes()));
    format!("[{} base64 chars, sha256 {}]", payload.len(), &digest[..8])
}

/// `frame` with a long media payload replaced by its length and hash.
pub fn abbreviated(frame: &str) -> String {
    match media_payload(frame) {
        Some(p) if p.len() > SHORT_PAYLOAD => with_payload(frame, &p, &hashed(&p)),
        _ => frame.to_owned(),
    }
}

/// Describes frames by their events in order, runs counted: `connected, start, 10 media`.
pub fn describe_events(frames: &[String]) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for frame in frames {
        let event = event(frame);
        match runs.last_mut() {
            Some((last, n)) if *last == event => *n += 1,
            _ => runs.push((event, 1)),
        }
    }
    runs.into_iter()
        .map(|(event, n)| if n == 1 { event } else { format!("{n} {event}") })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The frames Twilio's side sent, numbered from 1, for references.
pub struct CallerFrames<'a> {
    frames: &'a [String],
    /// Caller frame numbers by the media payload they carried.
    by_payload: BTreeMap<String, Vec<usize>>,
    /// Caller frame numbers of media frames, in order.
    media: Vec<usize>,
}

impl<'a> CallerFrames<'a> {
    pub fn new(frames: &'a [String]) -> Self {
        let mut by_payload: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut media = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            if let Some(p) = media_payload(frame) {
                by_payload.entry(p).or_default().push(i + 1);
                media.push(i + 1);
            }
        }
        Self {
            frames,
            by_payload,
            media,
        }
    }

    /// The caller media frame after caller frame `n`.
    fn next_media(&self, n: usize) -> Option<usize> {
        self.media.iter().copied().find(|&m| m > n)
    }

    /// The number of the caller frame that carried `payload`: the first after `after`, or
    /// else the first.
    fn carrier(&self, payload: &str, after: usize) -> Option<usize> {
        let carriers = self.by_payload.get(payload)?;
        carriers
            .iter()
            .copied()
            .find(|&n| n > after)
            .or(carriers.first().copied())
    }

    /// What the service sent to Twilio's side, in order, with runs collapsed: a run of media
    /// frames that play the caller's own payloads back in order is one line
    /// (`[payload of caller frames #a-#b]`), a run of identical frames is `xN` and one frame.
    pub fn render_received(
        &self,
        received: &[String],
        mut redact: impl FnMut(&str) -> String,
    ) -> Vec<String> {
        // Each frame as (text with `{ref}` where a reference goes, the reference).
        let mut items: Vec<(String, Option<usize>)> = Vec::new();
        let mut last_ref = 0;
        for frame in received {
            let frame = redact(frame);
            let item = match media_payload(&frame) {
                Some(p) => match self.carrier(&p, last_ref) {
                    Some(n) => {
                        last_ref = n;
                        (with_payload(&frame, &p, "{ref}"), Some(n))
                    }
                    None => (abbreviated(&frame), None),
                },
                None => (frame, None),
            };
            items.push(item);
        }
        let mut lines = Vec::new();
        let mut i = 0;
        while i < items.len() {
            let (text, first) = &items[i];
            let mut j = i + 1;
            while j < items.len()
                && items[j].0 == *text
                && match (items[j - 1].1, items[j].1) {
                    (None, None) => true,
                    (Some(prev), Some(next)) => self.next_media(prev) == Some(next),
                    _ => false,
                }
            {
                j += 1;
            }
            let count = j - i;
            let text = match (first, items[j - 1].1) {
                (Some(a), Some(b)) if a != &b => {
                    text.replace("{ref}", &format!("[payload of caller frames #{a}-#{b}]"))
                }
                (Some(a), _) => text.replace("{ref}", &format!("[payload of caller frame #{a}]")),
                _ => text.clone(),
            };
            lines.push(if count > 1 {
                format!("x{count} {text}")
            } else {
                text
            });
            i = j;
        }
        lines
    }

    /// What the agent received, in order: `= #k` marks a frame byte-identical to caller frame
    /// `#k` (its long payload shortened, being known), `~` a frame the caller did not send as
    /// such, shown in full (long payloads hashed). Runs of identical media are collapsed to
    /// their first and last frame.
    pub fn render_relayed(&self, received: &[String], mut redact: impl FnMut(&str) -> String) -> Vec<String> {
        let mut items: Vec<(Option<usize>, String)> = Vec::new();
        let mut next = 0;
        for frame in received {
            let same = self.frames[next.min(self.frames.len())..]
                .iter()
                .position(|f| f == frame)
                .map(|offset| next + offset);
            match same {
                Some(index) => {
                    next = index + 1;
                    let text = match media_payload(frame) {
                        Some(p) if p.len() > SHORT_PAYLOAD => {
                            with_payload(frame, &p, &format!("[{} base64 chars]", p.len()))
                        }
                        _ => frame.clone(),
                    };
                    items.push((Some(index + 1), redact(&text)));
                }
                None => items.push((None, abbreviated(&redact(frame)))),
            }
        }
        let is_media = |item: &(Option<usize>, String)| {
            item.0
                .is_some_and(|n| media_payload(&self.frames[n - 1]).is_some())
        };
        let line = |item: &(Option<usize>, String)| match item.0 {
            Some(n) => format!("= #{n} {}", item.1),
            None => format!("~ {}", item.1),
        };
        let mut lines = Vec::new();
        let mut i = 0;
        while i < items.len() {
            let mut j = i + 1;
            if is_media(&items[i]) {
                while j < items.len() && is_media(&items[j]) && items[j].0 == items[j - 1].0.map(|n| n + 1) {
                    j += 1;
                }
            }
            if j - i >= COLLAPSE_RUN {
                let (a, b) = (items[i + 1].0.unwrap_or(0), items[j - 2].0.unwrap_or(0));
                lines.push(line(&items[i]));
                lines.push(format!(
                    "= ... {} more media frames, byte-identical to caller frames #{a}-#{b}",
                    j - i - 2
                ));
                lines.push(line(&items[j - 1]));
            } else {
                lines.extend(items[i..j].iter().map(line));
            }
            i = j;
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(seq: usize, payload: &str) -> String {
        format!(
            r#"{{"event":"media","sequenceNumber":"{seq}","streamSid":"MZ1","media":{{"payload":"{payload}"}}}}"#
        )
    }

    fn reply(payload: &str) -> String {
        format!(r#"{{"event":"media","streamSid":"MZ1","media":{{"payload":"{payload}"}}}}"#)
    }

    #[test]
    fn echoed_payloads_collapse_to_a_range_of_caller_frames() {
        let long = |i: usize| format!("{i:0>30}");
        let sent: Vec<String> = std::iter::once(r#"{"event":"connected"}"#.to_owned())
            .chain((1..=4).map(|i| media(i, &long(i))))
            .collect();
        let caller = CallerFrames::new(&sent);
        let received: Vec<String> = (1..=3)
            .map(|i| reply(&long(i)))
            .chain([r#"{"event":"clear","streamSid":"MZ1"}"#.to_owned()])
            .chain([reply(&long(4)), reply("AQ=="), reply("AQ==")])
            .chain([reply(&"B".repeat(40))])
            .collect();
        let lines = caller.render_received(&received, str::to_owned);
        assert_eq!(
            lines,
            [
                r#"x3 {"event":"media","streamSid":"MZ1","media":{"payload":"[payload of caller frames #2-#4]"}}"#,
                r#"{"event":"clear","streamSid":"MZ1"}"#,
                r#"{"event":"media","streamSid":"MZ1","media":{"payload":"[payload of caller frame #5]"}}"#,
                r#"x2 {"event":"media","streamSid":"MZ1","media":{"payload":"AQ=="}}"#,
                r#"{"event":"media","streamSid":"MZ1","media":{"payload":"[40 base64 chars, sha256 0bd73af6]"}}"#,
            ]
        );
    }

    #[test]
    fn relayed_frames_are_matched_to_the_caller_frames() {
        let long = "A".repeat(30);
        let sent: Vec<String> = [r#"{"event":"connected"}"#.to_owned(), "start".to_owned()]
            .into_iter()
            .chain((1..=5).map(|i| media(i, &long)))
            .chain([r#"{"event":"stop"}"#.to_owned()])
            .collect();
        let caller = CallerFrames::new(&sent);
        let mut received = sent.clone();
        received[1] = "edited start".to_owned();
        received.remove(6); // the last media frame never arrived
        let lines = caller.render_relayed(&received, str::to_owned);
        let shown = media(1, "[30 base64 chars]");
        assert_eq!(
            lines,
            [
                r#"= #1 {"event":"connected"}"#.to_owned(),
                "~ edited start".to_owned(),
                format!("= #3 {shown}"),
                "= ... 2 more media frames, byte-identical to caller frames #4-#5".to_owned(),
                format!("= #6 {}", media(4, "[30 base64 chars]")),
                r#"= #8 {"event":"stop"}"#.to_owned(),
            ]
        );
    }

    #[test]
    fn events_are_described_in_runs() {
        let frames = [
            r#"{"event":"connected"}"#.to_owned(),
            media(1, "A"),
            media(2, "A"),
            "not json".to_owned(),
        ];
        assert_eq!(describe_events(&frames), "connected, 2 media, invalid");
    }
}
