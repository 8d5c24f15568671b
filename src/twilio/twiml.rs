//! TwiML documents: rendered with a fixed, stable layout (two-space indentation, attributes in
//! a fixed order) so that snapshots of them are meaningful, and read back ([`parse`]) the way
//! Twilio reads what a webhook answers.
use std::fmt::{self, Write as _};

use quick_xml::events::{BytesStart, Event};

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
    let mut out = String::with_capacity(512);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n");
    for verb in verbs {
        match verb {
            Verb::Say(text) => {
                let _ = writeln!(out, "  <Say>{}</Say>", Escaped(text));
            }
            Verb::Dial(number) => {
                let _ = writeln!(out, "  <Dial>{}</Dial>", Escaped(number));
            }
            Verb::Redirect(url) => {
                let _ = writeln!(out, "  <Redirect method=\"POST\">{}</Redirect>", Escaped(url));
            }
            Verb::Hangup => out.push_str("  <Hangup/>\n"),
            Verb::ConnectStream {
                action,
                stream_url,
                parameters,
            } => {
                let _ = writeln!(out, "  <Connect action=\"{}\">", Escaped(action));
                let _ = writeln!(out, "    <Stream url=\"{}\">", Escaped(stream_url));
                for (name, value) in parameters {
                    let _ = writeln!(
                        out,
                        "      <Parameter name=\"{}\" value=\"{}\"/>",
                        Escaped(name),
                        Escaped(value)
                    );
                }
                out.push_str("    </Stream>\n  </Connect>\n");
            }
        }
    }
    out.push_str("</Response>\n");
    out
}

/// Text escaped for XML content and double-quoted attribute values, as it is written. Line
/// breaks and tabs become character references (so they survive attribute normalisation);
/// other control characters, which XML 1.0 cannot carry, are dropped.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs of printable ASCII other than the four specials (most of a URL or a token) are
        // written whole; a byte outside them always starts a character.
        let plain = |b: u8| (b' '..=b'~').contains(&b) && !matches!(b, b'&' | b'<' | b'>' | b'"');
        let mut rest = self.0;
        while let Some(i) = rest.bytes().position(|b| !plain(b)) {
            f.write_str(&rest[..i])?;
            let Some(c) = rest[i..].chars().next() else {
                break;
            };
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\n' => f.write_str("&#10;")?,
                '\r' => f.write_str("&#13;")?,
                '\t' => f.write_str("&#9;")?,
                c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
                c => f.write_char(c)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// An HTTP method a TwiML verb asks for (`method` attribute; Twilio's default is POST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    fn from_attribute(value: Option<&str>) -> Self {
        match value {
            Some(m) if m.eq_ignore_ascii_case("GET") => Self::Get,
            _ => Self::Post,
        }
    }

    /// `GET` or `POST`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

/// The `<Stream>` of a `<Connect>`: where to open the media WebSocket, and its `<Parameter>`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTarget {
    pub url: String,
    pub parameters: Vec<(String, String)>,
}

/// One verb of a TwiML document read by [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `<Say>`: the text (nested SSML flattened to its text).
    Say(String),
    /// `<Play>`: the audio URL.
    Play(String),
    /// `<Dial>`: the number, or the nouns' contents joined by ", ".
    Dial(String),
    /// `<Pause length>`.
    Pause { length: Option<String> },
    /// `<Hangup/>`.
    Hangup,
    /// `<Redirect>`: continue with the TwiML at `url` (possibly relative).
    Redirect { url: String, method: Method },
    /// `<Connect>`, with its `<Stream>` when it holds one.
    Connect {
        action: Option<String>,
        method: Method,
        stream: Option<StreamTarget>,
    },
    /// Any other verb, by element name.
    Other(String),
}

impl Instruction {
    /// The verb's element name, e.g. `Say`.
    pub fn name(&self) -> &str {
        match self {
            Self::Say(_) => "Say",
            Self::Play(_) => "Play",
            Self::Dial(_) => "Dial",
            Self::Pause { .. } => "Pause",
            Self::Hangup => "Hangup",
            Self::Redirect { .. } => "Redirect",
            Self::Connect { .. } => "Connect",
            Self::Other(name) => name,
        }
    }
}

/// Why a TwiML document could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TwimlError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("no root element")]
    Empty,
    #[error("the root element is <{0}>, not <Response>")]
    NotResponse(String),
    #[error("<{verb}> has no {what}")]
    Missing { verb: &'static str, what: &'static str },
}

/// Reads a TwiML document into its verbs, in order.
pub fn parse(xml: &str) -> Result<Vec<Instruction>, TwimlError> {
    let root = read_tree(xml)?;
    if root.name != "Response" {
        return Err(TwimlError::NotResponse(root.name));
    }
    root.children.iter().map(instruction).collect()
}

fn instruction(verb: &Element) -> Result<Instruction, TwimlError> {
    Ok(match verb.name.as_str() {
        "Say" => Instruction::Say(verb.all_text()),
        "Play" => Instruction::Play(verb.all_text()),
        "Dial" => {
            let number = verb.text.trim();
            Instruction::Dial(if number.is_empty() {
                let nouns: Vec<String> = verb.children.iter().map(Element::all_text).collect();
                nouns.join(", ")
            } else {
                number.to_owned()
            })
        }
        "Pause" => Instruction::Pause {
            length: verb.attribute("length").map(str::to_owned),
        },
        "Hangup" => Instruction::Hangup,
        "Redirect" => {
            let url = verb.all_text();
            if url.is_empty() {
                return Err(TwimlError::Missing {
                    verb: "Redirect",
                    what: "URL",
                });
            }
            Instruction::Redirect {
                url,
                method: Method::from_attribute(verb.attribute("method")),
            }
        }
        "Connect" => {
            let stream = match verb.children.iter().find(|c| c.name == "Stream") {
                None => None,
                Some(stream) => Some(StreamTarget {
                    url: stream
                        .attribute("url")
                        .filter(|u| !u.is_empty())
                        .ok_or(TwimlError::Missing {
                            verb: "Stream",
                            what: "url",
                        })?
                        .to_owned(),
                    parameters: stream
                        .children
                        .iter()
                        .filter(|p| p.name == "Parameter")
                        .filter_map(|p| {
                            let name = p.attribute("name")?;
                            Some((name.to_owned(), p.attribute("value").unwrap_or("").to_owned()))
                        })
                        .collect(),
                }),
            };
            Instruction::Connect {
                action: verb.attribute("action").map(str::to_owned),
                method: Method::from_attribute(verb.attribute("method")),
                stream,
            }
        }
        other => Instruction::Other(other.to_owned()),
    })
}

/// An element of a parsed document.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    /// The element's own text (not its children's).
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The element's text and its descendants', whitespace-trimmed.
    fn all_text(&self) -> String {
        fn collect(element: &Element, out: &mut String) {
            out.push_str(&element.text);
            for child in &element.children {
                collect(child, out);
            }
        }
        let mut out = String::new();
        collect(self, &mut out);
        out.trim().to_owned()
    }
}

fn xml_error(e: impl std::fmt::Display) -> TwimlError {
    TwimlError::Xml(e.to_string())
}

fn read_tree(xml: &str) -> Result<Element, TwimlError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut open: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(start) => open.push(element(&start)?),
            Event::Empty(empty) => close(&mut open, &mut root, element(&empty)?)?,
            Event::End(_) => {
                let done = open.pop().ok_or_else(|| xml_error("unexpected end tag"))?;
                close(&mut open, &mut root, done)?;
            }
            Event::Text(text) => {
                let text = text.unescape().map_err(xml_error)?;
                match open.last_mut() {
                    Some(parent) => parent.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(xml_error("text outside the root element")),
                }
            }
            Event::CData(data) => {
                let data = data.into_inner();
                let text = std::str::from_utf8(&data).map_err(xml_error)?;
                match open.last_mut() {
                    Some(parent) => parent.text.push_str(text),
                    None => return Err(xml_error("text outside the root element")),
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(unclosed) = open.last() {
        return Err(xml_error(format!("<{}> is not closed", unclosed.name)));
    }
    root.ok_or(TwimlError::Empty)
}

fn element(start: &BytesStart<'_>) -> Result<Element, TwimlError> {
    let name = std::str::from_utf8(start.name().as_ref())
        .map_err(xml_error)?
        .to_owned();
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(xml_error)?;
        let key = std::str::from_utf8(attribute.key.as_ref())
            .map_err(xml_error)?
            .to_owned();
        let value = attribute.unescape_value().map_err(xml_error)?.into_owned();
        attributes.push((key, value));
    }
    Ok(Element {
        name,
        attributes,
        ..Element::default()
    })
}

fn close(open: &mut [Element], root: &mut Option<Element>, done: Element) -> Result<(), TwimlError> {
    match open.last_mut() {
        Some(parent) => parent.children.push(done),
        None if root.is_some() => return Err(xml_error("more than one root element")),
        None => *root = Some(done),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_render_writes() {
        let doc = render(&[
            Verb::Say("Hello & <welcome>\n".into()),
            Verb::Dial("+15550001111".into()),
            Verb::Redirect("https://x.example/cb?a=1&b=2".into()),
            Verb::ConnectStream {
                action: "https://v.example/api/v1/stream-ended".into(),
                stream_url: "wss://v.example/media-stream?stream_token=abc&x=\"y\"".into(),
                parameters: vec![("stream_token".into(), "abc".into()), ("k".into(), "a&b".into())],
            },
            Verb::Hangup,
        ]);
        assert_eq!(
            parse(&doc).unwrap(),
            vec![
                Instruction::Say("Hello & <welcome>".into()),
                Instruction::Dial("+15550001111".into()),
                Instruction::Redirect {
                    url: "https://x.example/cb?a=1&b=2".into(),
                    method: Method::Post
                },
                Instruction::Connect {
                    action: Some("https://v.example/api/v1/stream-ended".into()),
                    method: Method::Post,
                    stream: Some(StreamTarget {
                        url: "wss://v.example/media-stream?stream_token=abc&x=\"y\"".into(),
                        parameters: vec![("stream_token".into(), "abc".into()), ("k".into(), "a&b".into())],
                    }),
                },
                Instruction::Hangup,
            ]
        );
    }

    #[test]
    fn parses_twilio_documentation_shapes() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<Response>
    <Say voice="alice">Hi <prosody rate="slow">there</prosody></Say>
    <Pause length="2"/>
    <Play loop="2">https://api.twilio.com/cowbell.mp3</Play>
    <Dial><Number>+15550001111</Number><Sip>sip:a@b.example</Sip></Dial>
    <Redirect method="GET"><![CDATA[/next?x=1&y=2]]></Redirect>
    <Connect><VirtualAgent connectorName="x"/></Connect>
    <Gather input="dtmf"/>
    <Hangup></Hangup>
</Response>"#;
        let verbs = parse(doc).unwrap();
        assert_eq!(
            verbs,
            vec![
                Instruction::Say("Hi there".into()),
                Instruction::Pause {
                    length: Some("2".into())
                },
                Instruction::Play("https://api.twilio.com/cowbell.mp3".into()),
                Instruction::Dial("+15550001111, sip:a@b.example".into()),
                Instruction::Redirect {
                    url: "/next?x=1&y=2".into(),
                    method: Method::Get
                },
                Instruction::Connect {
                    action: None,
                    method: Method::Post,
                    stream: None
                },
                Instruction::Other("Gather".into()),
                Instruction::Hangup,
            ]
        );
        let names: Vec<&str> = verbs.iter().map(Instruction::name).collect();
        assert_eq!(
            names,
            ["Say", "Pause", "Play", "Dial", "Redirect", "Connect", "Gather", "Hangup"]
        );
    }

    #[test]
    fn rejects_what_twilio_could_not_run() {
        assert!(matches!(parse(""), Err(TwimlError::Empty)));
        assert!(matches!(parse("not xml"), Err(TwimlError::Xml(_))));
        assert!(matches!(
            parse("<Response><Say>hi</Response>"),
            Err(TwimlError::Xml(_))
        ));
        assert!(matches!(
            parse("<Response><Say>hi</Say>"),
            Err(TwimlError::Xml(_))
        ));
        assert!(matches!(parse("<Response/><Response/>"), Err(TwimlError::Xml(_))));
        assert_eq!(
            parse("<html><body/></html>"),
            Err(TwimlError::NotResponse("html".into()))
        );
        assert_eq!(
            parse("<Response><Redirect/></Response>"),
            Err(TwimlError::Missing {
                verb: "Redirect",
                what: "URL"
            })
        );
        assert_eq!(
            parse("<Response><Connect><Stream/></Connect></Response>"),
            Err(TwimlError::Missing {
                verb: "Stream",
                what: "url"
            })
        );
        assert!(matches!(
            parse("<Response><Say>&bogus;</Say></Response>"),
            Err(TwimlError::Xml(_))
        ));
        assert_eq!(parse("<Response/>"), Ok(vec![]));
    }

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

    #[test]
    fn escaping_keeps_text_between_what_it_replaces_or_drops() {
        let cases = [
            (
                "wss://v.example/media-stream?t=a.b_c-d~",
                "wss://v.example/media-stream?t=a.b_c-d~",
            ),
            ("a&b", "a&amp;b"),
            ("Zoë & Renée\t", "Zoë &amp; Renée&#9;"),
            ("\u{85}x\u{FFFE}\u{FFFF}y\u{7f}", "xy"),
            ("日本\"", "日本&quot;"),
            ("", ""),
        ];
        for (text, escaped) in cases {
            assert_eq!(Escaped(text).to_string(), escaped, "{text:?}");
        }
    }
}
