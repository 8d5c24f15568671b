//! Rewrites the `signature` of every genuine request in `fixtures/` from its `signed_with` key,
//! after a fixture's URL or fields were edited. Forged and unsigned requests are left alone.
use conformance::{fixtures_dir, load_fixtures};

fn main() {
    for (name, mut fixture) in load_fixtures() {
        let mut changed = false;
        for request in &mut fixture.requests {
            if let Some(genuine) = request.genuine_signature() {
                if request.signature.as_deref() != Some(genuine.as_str()) {
                    request.signature = Some(genuine);
                    changed = true;
                }
            }
        }
        if changed {
            let path = fixtures_dir().join(format!("{name}.json"));
            let text = serde_json::to_string_pretty(&fixture).expect("fixture serialises") + "\n";
            std::fs::write(&path, text).expect("fixture written");
            println!("re-signed {}", path.display());
        }
    }
}
