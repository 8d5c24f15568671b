//! Network policy shared by the edges that call out (event delivery, later agent URLs).
pub mod ssrf;
