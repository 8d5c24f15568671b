//! Media Streams text frames: `twilio::media::parse` (Twilio's frames) and the `Outbound`
//! decoding applied to agents' frames never panic on arbitrary text, and every accepted message
//! survives serialisation and a second parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stateset_voice::twilio::media::{self, Inbound, Outbound};

fuzz_target!(|data: &[u8]| {
    let frame = String::from_utf8_lossy(data);

    if let Ok(inbound) = media::parse(&frame) {
        let json = serde_json::to_string(&inbound).expect("inbound messages serialise");
        let again: Inbound = media::parse(&json).expect("a serialised inbound message parses");
        assert_eq!(again, inbound);
    }

    if let Ok(outbound) = serde_json::from_str::<Outbound>(&frame) {
        let json = outbound.to_json();
        let again: Outbound = serde_json::from_str(&json).expect("to_json output parses");
        assert_eq!(again, outbound);

        // Addressing a message to a stream changes its streamSid and nothing else.
        let sid = "MZ00000000000000000000000000000000";
        let addressed = outbound.clone().for_stream(sid);
        assert_eq!(addressed.clone().for_stream(stream_sid(&outbound)), outbound);
        assert_eq!(stream_sid(&addressed), sid);
        let reparsed: Outbound = serde_json::from_str(&addressed.to_json()).expect("parses");
        assert_eq!(reparsed, addressed);
    }
});

fn stream_sid(message: &Outbound) -> &str {
    match message {
        Outbound::Media { stream_sid, .. }
        | Outbound::Mark { stream_sid, .. }
        | Outbound::Clear { stream_sid } => stream_sid,
    }
}
