//! TwiML documents with a fixed, stable layout (two-space indentation, attributes in a fixed
//! order) so that snapshots of them are meaningful.
use std::fmt::Write as _;

/// One TwiML verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// `<Say>`: speak text.
    Say(String),
    /// `<Dial>`: transfer the call to a number.
    Dial(String),
    /// `<Redirect method="POST">`: continue with the TwiML at a URL.
    Redirect(String),
    /// `<Hangup/>`.
    Hangup,
    /// `<Connect action><Stream url>` with custom parameters.
    ConnectStream {
        action: String,
        stream_url: String,
        parameters: Vec<(String, String)>,
    },
}

/// Renders a `<Response>` holding `verbs`.
pub fn render(verbs: &[Verb]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n");
    for verb in verbs {
        match verb {
            Verb::Say(text) => {
                let _ = writeln!(out, "  <Say>{}</Say>", escape(text));
            }
            Verb::Dial(number) => {
                let _ = writeln!(out, "  <Dial>{}</Dial>", escape(number));
            }
            Verb::Redirect(url) => {
                let _ = writeln!(out, "  <Redirect method=\"POST\">{}</Redirect>", escape(url));
            }
            Verb::Hangup => out.push_str("  <Hangup/>\n"),
            Verb::ConnectStream {
                action,
                stream_url,
                parameters,
            } => {
                let _ = writeln!(out, "  <Connect action=\"{}\">", escape(action));
                let _ = writeln!(out, "    <Stream url=\"{}\">", escape(stream_url));
                for (name, value) in parameters {
                    let _ = writeln!(
                        out,
                        "      <Parameter name=\"{}\" value=\"{}\"/>",
                        escape(name),
                        escape(value)
                    );
                }
                out.push_str("    </Stream>\n  </Connect>\n");
            }
        }
    }
    out.push_str("</Response>\n");
    out
}

/// Escapes text for XML content and double-quoted attribute values. Line breaks and tabs
/// become character references (so they survive attribute normalisation); other control
/// characters, which XML 1.0 cannot carry, are dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_stream_shape() {
        let doc = render(&[Verb::ConnectStream {
            action: "https://v.example/api/v1/stream-ended".into(),
            stream_url: "wss://v.example/media-stream?stream_token=abc".into(),
            parameters: vec![("stream_token".into(), "abc".into())],
        }]);
        assert_eq!(
            doc,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n  <Connect action=\"https://v.example/api/v1/stream-ended\">\n    <Stream url=\"wss://v.example/media-stream?stream_token=abc\">\n      <Parameter name=\"stream_token\" value=\"abc\"/>\n    </Stream>\n  </Connect>\n</Response>\n"
        );
    }

    #[test]
    fn fallback_verbs() {
        let doc = render(&[
            Verb::Say("One moment".into()),
            Verb::Dial("+15550001111".into()),
            Verb::Redirect("https://x.example/cb?a=1&b=2".into()),
            Verb::Hangup,
        ]);
        assert!(doc.contains("  <Say>One moment</Say>\n  <Dial>+15550001111</Dial>\n"));
        assert!(doc.contains("<Redirect method=\"POST\">https://x.example/cb?a=1&amp;b=2</Redirect>"));
        assert!(doc.ends_with("  <Hangup/>\n</Response>\n"));
    }

    #[test]
    fn hostile_text_cannot_inject_markup() {
        let evil = "</Say><Dial>+19005550000</Dial><Say a=\"'\">\r\n\u{0}\u{1b}";
        let doc = render(&[Verb::Say(evil.into())]);
        assert_eq!(doc.matches('<').count(), 5, "{doc}");
        assert!(doc.contains(
            "<Say>&lt;/Say&gt;&lt;Dial&gt;+19005550000&lt;/Dial&gt;&lt;Say a=&quot;'&quot;&gt;&#13;&#10;</Say>"
        ));
    }
}
