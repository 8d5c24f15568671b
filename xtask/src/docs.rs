//! `cargo xtask docs`: writes the docs portal to `target/docs/` with the binary's `docs`
//! subcommand (the pages `/docs` serves), and validates `asyncapi.yaml` against the official
//! AsyncAPI 3.0 schema with `@asyncapi/parser`, installed from `portal/package-lock.json` into
//! `target/portal-node` (again only when the lock changes).
use std::{path::PathBuf, process::Command};

use crate::{cargo, root, run, support::fingerprint};

/// Writes `target/docs/` and validates the AsyncAPI documents (committed and written).
pub fn docs() -> Result<(), String> {
    let out = root().join("target/docs");
    run(
        "docs portal (stateset-voice docs target/docs)",
        cargo()
            .args(["run", "--quiet", "--package", "stateset-voice", "--", "docs"])
            .arg(&out),
    )?;
    let node = node_modules()?;
    for document in [root().join("asyncapi.yaml"), out.join("asyncapi.yaml")] {
        run(
            &format!("AsyncAPI 3.0 validation of {}", document.display()),
            Command::new("node")
                .arg(node.join("validate.mjs"))
                .arg(&document)
                .current_dir(&node),
        )?;
    }
    eprintln!("the docs portal is in {}", out.display());
    Ok(())
}

/// `@asyncapi/parser` in `target/portal-node`, reinstalled when the lock changes.
fn node_modules() -> Result<PathBuf, String> {
    let dir = root().join("target/portal-node");
    let lock = std::fs::read(root().join("portal/package-lock.json"))
        .map_err(|e| format!("portal/package-lock.json: {e}"))?;
    let stamp = dir.join(".package-lock");
    let wanted = fingerprint(&lock);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The script is always the committed one.
    std::fs::copy(root().join("portal/validate.mjs"), dir.join("validate.mjs"))
        .map_err(|e| format!("copying portal/validate.mjs: {e}"))?;
    if dir.join("node_modules/@asyncapi/parser/package.json").exists()
        && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted)
    {
        eprintln!("==> target/portal-node is up to date");
        return Ok(dir);
    }
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(root().join("portal").join(file), dir.join(file))
            .map_err(|e| format!("copying portal/{file}: {e}"))?;
    }
    run(
        "npm ci (portal/package-lock.json) into target/portal-node",
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
    )?;
    std::fs::write(&stamp, &wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(dir)
}
