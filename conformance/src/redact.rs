//! Redaction of what changes from run to run: stream tokens get names by order of first
//! appearance, so a snapshot still shows whether a retry reused one.

/// The stream tokens (JWTs) in `body`, in order.
pub(crate) fn tokens_in(body: &str) -> impl Iterator<Item = &str> {
    body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .filter(|piece| piece.starts_with("eyJ") && piece.matches('.').count() == 2)
}

/// Names tokens by order of first appearance, so a snapshot shows whether a retry reused one.
#[derive(Default)]
pub struct TokenNames(Vec<String>);

impl TokenNames {
    /// `body` with every stream token replaced by its name.
    pub fn redact(&mut self, body: &str) -> String {
        let mut out = body.to_owned();
        let found: Vec<String> = tokens_in(body).map(str::to_owned).collect();
        for token in found {
            let index = match self.0.iter().position(|t| *t == token) {
                Some(i) => i,
                None => {
                    self.0.push(token.clone());
                    self.0.len() - 1
                }
            };
            out = out.replace(&token, &format!("[stream_token#{}]", index + 1));
        }
        out
    }
}
