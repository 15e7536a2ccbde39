//! AES contexts for the block and stream modes.
//!
//! OpenSSL 3 looks a cipher up by name on every initialisation unless it is
//! handed one fetched beforehand, and a new context expands the key (and,
//! for GCM, precomputes its hash key) each time. Small operations pay for
//! both on every call, so ciphers are fetched once per process, and the
//! context of a connection's last finished operation is kept, key schedule
//! and all, for the next one with the same key, cipher, direction and IV
//! length, which then only sets its new IV.
//!
//! The kept context lives in the connection's thread (one thread per
//! connection) and dies with it, or with the next AES operation of that
//! connection; OpenSSL wipes a context's key material when freeing it.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock, Weak};

use hsmlink_core::ck::{ckr, Rv};
use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;

use super::AesMode;
use crate::object::Object;

/// What a context can be reused for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Use {
    /// Index into [`ciphers`].
    cipher: usize,
    encrypt: bool,
    iv_len: usize,
}

/// A context ready for one operation.
pub(super) struct AesCtx {
    ctx: CipherCtx,
    how: Use,
}

thread_local! {
    /// The context of this thread's last finished AES operation.
    static KEPT: RefCell<Option<(Weak<Object>, Use, CipherCtx)>> = const { RefCell::new(None) };
}

const MODES: [&str; 4] = ["ECB", "CBC", "CTR", "GCM"];

/// The AES ciphers, fetched once: `MODES` × 128/192/256 bits.
fn ciphers() -> &'static [Option<Cipher>] {
    static C: OnceLock<Vec<Option<Cipher>>> = OnceLock::new();
    C.get_or_init(|| {
        MODES
            .iter()
            .flat_map(|m| [128, 192, 256].map(|bits| format!("AES-{bits}-{m}")))
            .map(|name| Cipher::fetch(None, &name, None).ok())
            .collect()
    })
}

fn cipher_index(mode: &AesMode, key_len: usize) -> Result<usize, Rv> {
    let m = match mode {
        AesMode::Ecb => 0,
        AesMode::Cbc(_) | AesMode::CbcPad(_) => 1,
        AesMode::Ctr(..) => 2,
        AesMode::Gcm { .. } => 3,
    };
    let k = match key_len {
        16 => 0,
        24 => 1,
        32 => 2,
        _ => return Err(ckr::KEY_SIZE_RANGE),
    };
    Ok(m * 3 + k)
}

fn init(
    ctx: &mut CipherCtx,
    encrypt: bool,
    cipher: Option<&CipherRef>,
    key: Option<&[u8]>,
    iv: Option<&[u8]>,
) -> Result<(), Rv> {
    let r = if encrypt {
        ctx.encrypt_init(cipher, key, iv)
    } else {
        ctx.decrypt_init(cipher, key, iv)
    };
    r.map_err(|_| ckr::MECHANISM_PARAM_INVALID)
}

impl AesCtx {
    /// A context for `mode` with `key` (whose value is `value`), encrypting
    /// or decrypting; the GCM additional data is already fed.
    pub(super) fn start(
        mode: &AesMode,
        encrypt: bool,
        key: &Arc<Object>,
        value: &[u8],
    ) -> Result<AesCtx, Rv> {
        let iv: Option<&[u8]> = match mode {
            AesMode::Ecb => None,
            AesMode::Cbc(iv) | AesMode::CbcPad(iv) => Some(iv),
            AesMode::Ctr(block, _) => Some(block),
            AesMode::Gcm { iv, .. } => Some(iv),
        };
        let how = Use {
            cipher: cipher_index(mode, value.len())?,
            encrypt,
            iv_len: iv.map_or(0, <[u8]>::len),
        };
        let kept = KEPT.with(|k| match k.borrow_mut().take() {
            Some((owner, was, ctx))
                if was == how && std::ptr::eq(owner.as_ptr(), Arc::as_ptr(key)) =>
            {
                Some(ctx)
            }
            _ => None,
        });
        let ctx = match kept {
            Some(mut ctx) => {
                // Same key and cipher: only the IV (and the state) is new.
                init(&mut ctx, encrypt, None, None, iv)?;
                ctx
            }
            None => {
                let cipher = ciphers()
                    .get(how.cipher)
                    .and_then(Option::as_deref)
                    .ok_or(ckr::GENERAL_ERROR)?;
                if cipher.key_length() != value.len() {
                    return Err(ckr::KEY_SIZE_RANGE);
                }
                let mut ctx = CipherCtx::new().map_err(|_| ckr::HOST_MEMORY)?;
                init(&mut ctx, encrypt, Some(cipher), None, None)?;
                if let Some(iv) = iv {
                    if iv.len() != cipher.iv_length() {
                        // Only GCM takes other lengths; the others refuse.
                        ctx.set_iv_length(iv.len())
                            .map_err(|_| ckr::MECHANISM_PARAM_INVALID)?;
                        if ctx.iv_length() != iv.len() {
                            return Err(ckr::MECHANISM_PARAM_INVALID);
                        }
                    }
                }
                init(&mut ctx, encrypt, None, Some(value), iv)?;
                ctx
            }
        };
        let mut c = AesCtx { ctx, how };
        c.ctx.set_padding(matches!(mode, AesMode::CbcPad(_)));
        if let AesMode::Gcm { aad, .. } = mode {
            if !aad.is_empty() {
                c.ctx
                    .cipher_update(aad, None)
                    .map_err(|_| ckr::MECHANISM_PARAM_INVALID)?;
            }
        }
        Ok(c)
    }

    /// Process `data` into `out`, which has room for `data` and two blocks.
    pub(super) fn update(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize, ()> {
        if out.len() < data.len() + 32 {
            return Err(());
        }
        self.ctx.cipher_update(data, Some(out)).map_err(|_| ())
    }

    /// The last output (at most one block, into 32 bytes).
    pub(super) fn finish(&mut self, out: &mut [u8; 32]) -> Result<usize, ()> {
        self.ctx.cipher_final(out).map_err(|_| ())
    }

    /// GCM: the tag to check, before [`AesCtx::finish`].
    pub(super) fn set_tag(&mut self, tag: &[u8]) -> Result<(), ()> {
        self.ctx.set_tag(tag).map_err(|_| ())
    }

    /// GCM: the tag made, after [`AesCtx::finish`].
    pub(super) fn tag(&self, tag: &mut [u8]) -> Result<(), ()> {
        self.ctx.tag(tag).map_err(|_| ())
    }

    /// Keep this finished context for the thread's next operation with `key`.
    pub(super) fn keep(self, key: &Arc<Object>) {
        KEPT.with(|k| *k.borrow_mut() = Some((Arc::downgrade(key), self.how, self.ctx)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::symm::{self, Cipher as Legacy};

    fn object() -> Arc<Object> {
        Arc::new(Object::new(1, "u".into(), None, Default::default()))
    }

    fn kept() -> Option<Use> {
        KEPT.with(|k| k.borrow().as_ref().map(|(_, how, _)| *how))
    }

    /// One whole operation as `Running` does it: start, update, finish
    /// (checking or making a GCM tag), keep on success.
    fn run(
        mode: &AesMode,
        encrypt: bool,
        key: &Arc<Object>,
        value: &[u8],
        data: &[u8],
    ) -> Result<Vec<u8>, ()> {
        let mut c = AesCtx::start(mode, encrypt, key, value).map_err(|_| ())?;
        let gcm_tag = match mode {
            AesMode::Gcm { tag, .. } => Some(*tag),
            _ => None,
        };
        let (input, tag_in) = match gcm_tag {
            Some(t) if !encrypt => data.split_at(data.len() - t),
            _ => (data, &[][..]),
        };
        let mut out = vec![0u8; input.len() + 32];
        let n = c.update(input, &mut out)?;
        out.truncate(n);
        if !tag_in.is_empty() {
            c.set_tag(tag_in)?;
        }
        let mut rest = [0u8; 32];
        let m = c.finish(&mut rest)?;
        out.extend_from_slice(&rest[..m]);
        if let (Some(t), true) = (gcm_tag, encrypt) {
            let mut tag = vec![0u8; t];
            c.tag(&mut tag)?;
            out.extend(tag);
        }
        c.keep(key);
        Ok(out)
    }

    fn gcm(iv: &[u8], aad: &[u8]) -> AesMode {
        AesMode::Gcm {
            iv: iv.to_vec(),
            aad: aad.to_vec(),
            tag: 16,
        }
    }

    fn openssl_gcm(key: &[u8], iv: &[u8], aad: &[u8], data: &[u8]) -> Vec<u8> {
        let mut tag = [0u8; 16];
        let mut out =
            symm::encrypt_aead(Legacy::aes_256_gcm(), key, Some(iv), aad, data, &mut tag).unwrap();
        out.extend_from_slice(&tag);
        out
    }

    #[test]
    fn a_kept_context_gives_the_same_results_as_a_new_one() {
        let (k1, k2) = ([7u8; 32], [9u8; 32]);
        let (o1, o2) = (object(), object());
        let data = b"the same key, many messages, each with its own IV".to_vec();
        KEPT.with(|k| *k.borrow_mut() = None);

        let first = run(&gcm(&[1; 12], b"a"), true, &o1, &k1, &data).unwrap();
        assert_eq!(first, openssl_gcm(&k1, &[1; 12], b"a", &data));
        assert!(kept().is_some());
        // Reused: the same key and cipher, another IV and AAD.
        let second = run(&gcm(&[2; 12], b"bb"), true, &o1, &k1, &data).unwrap();
        assert_eq!(second, openssl_gcm(&k1, &[2; 12], b"bb", &data));
        // Decryption is another use: a new context, then kept.
        let back = run(&gcm(&[2; 12], b"bb"), false, &o1, &k1, &second).unwrap();
        assert_eq!(back, data);
        assert_eq!(kept().map(|u| u.encrypt), Some(false));
        // A wrong tag fails, and its context is not kept for the next one.
        let mut bad = second.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(run(&gcm(&[2; 12], b"bb"), false, &o1, &k1, &bad).is_err());
        assert_eq!(kept(), None);
        assert_eq!(
            run(&gcm(&[2; 12], b"bb"), false, &o1, &k1, &second).unwrap(),
            data
        );
        // Another key object (even with the same value) never reuses it.
        let other = run(&gcm(&[3; 12], b""), true, &o2, &k2, &data).unwrap();
        assert_eq!(other, openssl_gcm(&k2, &[3; 12], b"", &data));
        // Another IV length: a new context.
        let long_iv = run(&gcm(&[4; 16], b"x"), true, &o2, &k2, &data).unwrap();
        assert_eq!(long_iv, openssl_gcm(&k2, &[4; 16], b"x", &data));
        let again = run(&gcm(&[5; 16], b"y"), true, &o2, &k2, &data).unwrap();
        assert_eq!(again, openssl_gcm(&k2, &[5; 16], b"y", &data));
        // CBC with padding after CBC: the state is reset between messages.
        let pad = AesMode::CbcPad(vec![6; 16]);
        for _ in 0..2 {
            let c = run(&pad, true, &o1, &k1, &data[..20]).unwrap();
            let want =
                symm::encrypt(Legacy::aes_256_cbc(), &k1, Some(&[6; 16]), &data[..20]).unwrap();
            assert_eq!(c, want);
        }
        // An unpadded CBC with the same key after the padded one must not
        // inherit its padding.
        let raw = AesMode::Cbc(vec![6; 16]);
        assert!(run(&raw, true, &o1, &k1, &data[..20]).is_err());
        assert_eq!(run(&raw, true, &o1, &k1, &data[..32]).unwrap().len(), 32);
    }

    #[test]
    fn impossible_parameters_are_refused_not_panicked_on() {
        let o = object();
        assert_eq!(
            AesCtx::start(&AesMode::Cbc(vec![0; 8]), true, &o, &[0; 16]).err(),
            Some(ckr::MECHANISM_PARAM_INVALID)
        );
        assert_eq!(
            AesCtx::start(&gcm(&[], b""), true, &o, &[0; 16]).err(),
            Some(ckr::MECHANISM_PARAM_INVALID)
        );
        assert_eq!(
            AesCtx::start(&AesMode::Ecb, true, &o, &[0; 20]).err(),
            Some(ckr::KEY_SIZE_RANGE)
        );
    }
}
