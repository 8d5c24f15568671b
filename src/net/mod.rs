//! Network policy for outgoing connections to tenant-supplied URLs: the SSRF guard and the
//! resolver that pins a checked name to its checked addresses.
pub mod resolver;
pub mod ssrf;
