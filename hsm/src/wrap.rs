//! AES key wrap: RFC 3394 (`CKM_AES_KEY_WRAP`) and RFC 5649 with padding
//! (`CKM_AES_KEY_WRAP_PAD`), over AES block operations from OpenSSL.

use hsmlink_core::ck::{ckm, ckr, Rv};
use openssl::symm::{Cipher, Crypter, Mode};
use zeroize::Zeroizing;

const IV_3394: [u8; 8] = [0xa6; 8];
const AIV_5649: [u8; 4] = [0xa6, 0x59, 0x59, 0xa6];

struct Block {
    c: Crypter,
}

impl Block {
    fn new(kek: &[u8], mode: Mode) -> Result<Block, Rv> {
        let cipher = match kek.len() {
            16 => Cipher::aes_128_ecb(),
            24 => Cipher::aes_192_ecb(),
            32 => Cipher::aes_256_ecb(),
            _ => return Err(ckr::WRAPPING_KEY_SIZE_RANGE),
        };
        let mut c = Crypter::new(cipher, mode, kek, None).map_err(|_| ckr::GENERAL_ERROR)?;
        c.pad(false);
        Ok(Block { c })
    }

    fn run(&mut self, b: &mut [u8; 16]) -> Result<(), Rv> {
        let mut out = [0u8; 32];
        let n = self
            .c
            .update(&b[..], &mut out)
            .map_err(|_| ckr::GENERAL_ERROR)?;
        if n != 16 {
            return Err(ckr::GENERAL_ERROR);
        }
        b.copy_from_slice(&out[..16]);
        Ok(())
    }
}

fn w(kek: &[u8], iv: [u8; 8], p: &[u8]) -> Result<Vec<u8>, Rv> {
    let mut blk = Block::new(kek, Mode::Encrypt)?;
    let n = p.len() / 8;
    let mut a = iv;
    let mut r: Vec<[u8; 8]> = p
        .chunks_exact(8)
        .map(|c| {
            let mut x = [0u8; 8];
            x.copy_from_slice(c);
            x
        })
        .collect();
    for j in 0..6u64 {
        for (i, ri) in r.iter_mut().enumerate() {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&a);
            b[8..].copy_from_slice(ri);
            blk.run(&mut b)?;
            let t = (n as u64) * j + (i as u64 + 1);
            a.copy_from_slice(&b[..8]);
            for (x, y) in a.iter_mut().zip(t.to_be_bytes()) {
                *x ^= y;
            }
            ri.copy_from_slice(&b[8..]);
        }
    }
    let mut out = a.to_vec();
    for ri in r {
        out.extend_from_slice(&ri);
    }
    Ok(out)
}

fn uw(kek: &[u8], c: &[u8]) -> Result<([u8; 8], Zeroizing<Vec<u8>>), Rv> {
    let mut blk = Block::new(kek, Mode::Decrypt)?;
    let n = c.len() / 8 - 1;
    let mut a = [0u8; 8];
    a.copy_from_slice(c.get(..8).ok_or(ckr::WRAPPED_KEY_LEN_RANGE)?);
    let mut r: Vec<[u8; 8]> = c
        .get(8..)
        .unwrap_or(&[])
        .chunks_exact(8)
        .map(|c| {
            let mut x = [0u8; 8];
            x.copy_from_slice(c);
            x
        })
        .collect();
    for j in (0..6u64).rev() {
        for i in (0..n).rev() {
            let t = (n as u64) * j + (i as u64 + 1);
            let mut b = [0u8; 16];
            for (k, y) in t.to_be_bytes().iter().enumerate() {
                b[k] = a[k] ^ y;
            }
            let ri = r.get_mut(i).ok_or(ckr::GENERAL_ERROR)?;
            b[8..].copy_from_slice(ri);
            blk.run(&mut b)?;
            a.copy_from_slice(&b[..8]);
            ri.copy_from_slice(&b[8..]);
        }
    }
    let mut out = Zeroizing::new(Vec::with_capacity(n * 8));
    for ri in r {
        out.extend_from_slice(&ri);
    }
    Ok((a, out))
}

/// Wrap `key` under `kek` with `mech` and the default initial value.
pub fn wrap(mech: u64, kek: &[u8], key: &[u8]) -> Result<Vec<u8>, Rv> {
    wrap_iv(mech, kek, key, None)
}

/// Wrap `key` under `kek` with `mech`; `iv` replaces the default initial
/// value (8 bytes for RFC 3394, the 4-byte alternative IV for RFC 5649).
pub fn wrap_iv(mech: u64, kek: &[u8], key: &[u8], iv: Option<&[u8]>) -> Result<Vec<u8>, Rv> {
    match mech {
        ckm::AES_KEY_WRAP => {
            if key.len() < 16 || !key.len().is_multiple_of(8) {
                return Err(ckr::KEY_SIZE_RANGE);
            }
            w(kek, iv_3394(iv)?, key)
        }
        ckm::AES_KEY_WRAP_PAD => {
            if key.is_empty() {
                return Err(ckr::KEY_SIZE_RANGE);
            }
            let mli = u32::try_from(key.len()).map_err(|_| ckr::KEY_SIZE_RANGE)?;
            let aiv = aiv_5649(iv)?;
            let mut iv = [0u8; 8];
            iv[..4].copy_from_slice(&aiv);
            iv[4..].copy_from_slice(&mli.to_be_bytes());
            let mut p = Zeroizing::new(key.to_vec());
            p.resize(key.len().div_ceil(8) * 8, 0);
            if p.len() == 8 {
                let mut blk = Block::new(kek, Mode::Encrypt)?;
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&iv);
                b[8..].copy_from_slice(&p);
                blk.run(&mut b)?;
                Ok(b.to_vec())
            } else {
                w(kek, iv, &p)
            }
        }
        _ => Err(ckr::MECHANISM_INVALID),
    }
}

fn iv_3394(iv: Option<&[u8]>) -> Result<[u8; 8], Rv> {
    match iv {
        None => Ok(IV_3394),
        Some(v) => v.try_into().map_err(|_| ckr::MECHANISM_PARAM_INVALID),
    }
}

fn aiv_5649(iv: Option<&[u8]>) -> Result<[u8; 4], Rv> {
    match iv {
        None => Ok(AIV_5649),
        Some(v) => v.try_into().map_err(|_| ckr::MECHANISM_PARAM_INVALID),
    }
}

/// Unwrap `wrapped` under `kek` with `mech` and the default initial value.
pub fn unwrap(mech: u64, kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, Rv> {
    unwrap_iv(mech, kek, wrapped, None)
}

/// Unwrap `wrapped` under `kek` with `mech`; `iv` as in [`wrap_iv`].
pub fn unwrap_iv(
    mech: u64,
    kek: &[u8],
    wrapped: &[u8],
    iv: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, Rv> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(ckr::WRAPPED_KEY_LEN_RANGE);
    }
    match mech {
        ckm::AES_KEY_WRAP => {
            let (a, p) = uw(kek, wrapped)?;
            if !openssl::memcmp::eq(&a, &iv_3394(iv)?) {
                return Err(ckr::WRAPPED_KEY_INVALID);
            }
            Ok(p)
        }
        ckm::AES_KEY_WRAP_PAD => {
            let (a, p) = if wrapped.len() == 16 {
                let mut blk = Block::new(kek, Mode::Decrypt)?;
                let mut b = [0u8; 16];
                b.copy_from_slice(wrapped);
                blk.run(&mut b)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[..8]);
                (a, Zeroizing::new(b[8..].to_vec()))
            } else {
                uw(kek, wrapped)?
            };
            let mut mli = [0u8; 4];
            mli.copy_from_slice(&a[4..]);
            let mli = u32::from_be_bytes(mli) as usize;
            let ok = a[..4] == aiv_5649(iv)?
                && mli <= p.len()
                && mli + 8 > p.len()
                && p.get(mli..).is_some_and(|pad| pad.iter().all(|b| *b == 0));
            if !ok {
                return Err(ckr::WRAPPED_KEY_INVALID);
            }
            Ok(Zeroizing::new(p.get(..mli).unwrap_or(&[]).to_vec()))
        }
        _ => Err(ckr::MECHANISM_INVALID),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc3394_vector() {
        // RFC 3394 §4.1: 128-bit key data with a 128-bit KEK.
        let kek = hex("000102030405060708090A0B0C0D0E0F");
        let key = hex("00112233445566778899AABBCCDDEEFF");
        let c = wrap(ckm::AES_KEY_WRAP, &kek, &key).unwrap();
        assert_eq!(c, hex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"));
        assert_eq!(&unwrap(ckm::AES_KEY_WRAP, &kek, &c).unwrap()[..], &key[..]);
        let mut bad = c.clone();
        bad[3] ^= 1;
        assert_eq!(
            unwrap(ckm::AES_KEY_WRAP, &kek, &bad),
            Err(ckr::WRAPPED_KEY_INVALID)
        );
    }

    #[test]
    fn rfc5649_vectors() {
        let kek = hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
        let key = hex("c37b7e6492584340bed12207808941155068f738");
        let c = wrap(ckm::AES_KEY_WRAP_PAD, &kek, &key).unwrap();
        assert_eq!(
            c,
            hex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a")
        );
        assert_eq!(
            &unwrap(ckm::AES_KEY_WRAP_PAD, &kek, &c).unwrap()[..],
            &key[..]
        );
        let key = hex("466f7250617369");
        let c = wrap(ckm::AES_KEY_WRAP_PAD, &kek, &key).unwrap();
        assert_eq!(c, hex("afbeb0f07dfbf5419200f2ccb50bb24f"));
        assert_eq!(
            &unwrap(ckm::AES_KEY_WRAP_PAD, &kek, &c).unwrap()[..],
            &key[..]
        );
    }
}
