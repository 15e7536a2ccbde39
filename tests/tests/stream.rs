//! Large data through the module: one `C_EncryptUpdate` or `C_Encrypt` far
//! larger than a frame travels in chunks (pipelined on TCP), comes back in
//! order, and matches OpenSSL; HMAC over several MiB in one call agrees too.

use cryptoki::mechanism::Mechanism;
use hsmlink_tests::keys::{self, pattern};
use hsmlink_tests::token;
use openssl::symm::Cipher;

const MIB: usize = 1024 * 1024;

#[test]
fn a_mebibyte_update_streams_in_order_and_matches_openssl() {
    let t = token();
    let s = t.user_session();
    let key_bytes: Vec<u8> = (0..32u8).collect();
    let key = keys::import_aes(&s, &key_bytes);
    let iv = [7u8; 16];
    // Not a multiple of the chunk size; CBC carries state across chunks.
    let data = pattern(3 * MIB + 48);
    s.encrypt_init(&Mechanism::AesCbc(iv), key)
        .expect("C_EncryptInit");
    let mut got = s.encrypt_update(&data).expect("C_EncryptUpdate of 3 MiB");
    got.extend(s.encrypt_final().expect("C_EncryptFinal"));
    let want = openssl::symm::encrypt(Cipher::aes_256_cbc(), &key_bytes, Some(&iv), &data)
        .expect("openssl");
    // OpenSSL pads; the token's CKM_AES_CBC does not.
    assert_eq!(got.len(), data.len());
    assert_eq!(got, want[..data.len()], "ciphertext of the whole stream");

    // Single-part, larger than a frame, and back.
    let ct = s
        .encrypt(&Mechanism::AesCbcPad(iv), key, &data[..MIB + 5])
        .expect("C_Encrypt of 1 MiB");
    let want = openssl::symm::encrypt(
        Cipher::aes_256_cbc(),
        &key_bytes,
        Some(&iv),
        &data[..MIB + 5],
    )
    .expect("openssl");
    assert_eq!(ct, want);
    let pt = s
        .decrypt(&Mechanism::AesCbcPad(iv), key, &ct)
        .expect("C_Decrypt of 1 MiB");
    assert_eq!(pt, &data[..MIB + 5]);
}

#[test]
fn hmac_over_megabytes_in_one_call_matches_openssl() {
    let t = token();
    let s = t.user_session();
    let secret = pattern(48);
    let key = keys::import_generic_secret(&s, &secret);
    let data = pattern(2 * MIB + 3);
    let mac = s
        .sign(&Mechanism::Sha256Hmac, key, &data)
        .expect("C_Sign HMAC over 2 MiB");
    let pkey = openssl::pkey::PKey::hmac(&secret).unwrap();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
    signer.update(&data).unwrap();
    assert_eq!(mac, signer.sign_to_vec().unwrap());
    s.verify(&Mechanism::Sha256Hmac, key, &data, &mac)
        .expect("C_Verify HMAC over 2 MiB");
}
