//! Tenant secrets at rest, at start and at a rotation: the configured keys must open every
//! stored value (else the service does not start), values still in clear are encrypted under
//! the current key, and a rotation moves every value to it.
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::Error;
use crate::{
    db::tenant_secrets::{self, Reseal, StoredSecrets, PAGE},
    secrets::{KeyId, Keyring},
};

/// How tenant secrets are stored once the service started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtStart {
    /// No key is configured and no value is encrypted: secrets are stored in clear.
    InClear,
    /// Every value is encrypted; new ones under `key_id`.
    Encrypted {
        /// The current key.
        key_id: KeyId,
        /// Tenants whose values in clear were encrypted now.
        sealed_now: u64,
    },
}

/// The key ids stored values are encrypted with that `keys` does not hold.
pub fn missing_keys(keys: &Keyring, stored: &StoredSecrets) -> Vec<String> {
    stored
        .values_by_key
        .keys()
        .filter(|id| !keys.holds(id))
        .cloned()
        .collect()
}

/// Checks that `keys` open every stored tenant secret and, with a current key, encrypts the
/// values still in clear under it, all in one transaction (so once, whatever the number of
/// instances starting).
pub async fn at_start<D: TransactionTrait>(db: &D, keys: &Keyring) -> Result<AtStart, Error> {
    let txn = db.begin().await?;
    let stored = tenant_secrets::scan(&txn).await?;
    let missing = missing_keys(keys, &stored);
    if !missing.is_empty() {
        return Err(Error::KeysMissing(missing));
    }
    let Some(key_id) = keys.current_id() else {
        return Ok(AtStart::InClear);
    };
    let sealed_now = if stored.rows_in_clear > 0 {
        reseal_all(&txn, keys, Reseal::InClear).await?
    } else {
        0
    };
    txn.commit().await?;
    Ok(AtStart::Encrypted { key_id, sealed_now })
}

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The key every value is now encrypted under.
    pub key_id: KeyId,
    /// Tenants re-encrypted (0 when every value already was under the current key).
    pub rows_changed: u64,
}

/// Re-encrypts every tenant secret not under the current key (in clear, or under the previous
/// key), one transaction per page of tenants. Idempotent: a second run changes nothing.
pub async fn rotate<D: TransactionTrait>(db: &D, keys: &Keyring) -> Result<Rotation, Error> {
    let key_id = keys.current_id().ok_or_else(|| {
        Error::Invalid("VOICE_SECRETS_KEY is not set: there is no key to rotate to".to_owned())
    })?;
    let txn = db.begin().await?;
    let missing = missing_keys(keys, &tenant_secrets::scan(&txn).await?);
    txn.commit().await?;
    if !missing.is_empty() {
        return Err(Error::KeysMissing(missing));
    }
    let mut rows_changed = 0;
    let mut after: Option<String> = None;
    loop {
        let txn = db.begin().await?;
        let (changed, next) =
            tenant_secrets::reseal_page(&txn, keys, Reseal::NotCurrent, after.as_deref(), PAGE).await?;
        txn.commit().await?;
        rows_changed += changed;
        match next {
            Some(next) => after = Some(next),
            None => return Ok(Rotation { key_id, rows_changed }),
        }
    }
}

/// Re-encrypts the values `which` selects in every page of tenants over `db`.
async fn reseal_all<C: ConnectionTrait>(db: &C, keys: &Keyring, which: Reseal) -> Result<u64, Error> {
    let mut changed = 0;
    let mut after: Option<String> = None;
    loop {
        let (page_changed, next) =
            tenant_secrets::reseal_page(db, keys, which, after.as_deref(), PAGE).await?;
        changed += page_changed;
        match next {
            Some(next) => after = Some(next),
            None => return Ok(changed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Key;

    #[test]
    fn only_key_ids_the_ring_does_not_hold_are_missing() {
        let current = Key::new(&[1; 32]);
        let previous = Key::new(&[2; 32]);
        let stranger = Key::new(&[3; 32]);
        let stored = StoredSecrets {
            rows: 3,
            rows_in_clear: 1,
            values_by_key: [current.id(), previous.id(), stranger.id()]
                .map(|id| (id.to_string(), 1))
                .into(),
        };
        let ring = Keyring::new(Some(current.clone()), Some(previous.clone()));
        assert_eq!(missing_keys(&ring, &stored), vec![stranger.id().to_string()]);
        let mut expected = vec![previous.id().to_string(), stranger.id().to_string()];
        expected.sort();
        assert_eq!(
            missing_keys(&Keyring::new(Some(current), None), &stored),
            expected
        );
        assert_eq!(missing_keys(&Keyring::default(), &stored).len(), 3);
        assert!(missing_keys(&Keyring::default(), &StoredSecrets::default()).is_empty());
    }

    #[test]
    fn the_missing_key_error_names_the_key_and_the_variables() {
        let e = Error::KeysMissing(vec!["1a2b3c4d".to_owned()]).to_string();
        assert!(e.contains("1a2b3c4d") && e.contains("VOICE_SECRETS_KEY"), "{e}");
    }
}
