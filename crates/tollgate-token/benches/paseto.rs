//! Sign and verify a licence-sized (~500-byte JSON) `v4.public` token.
//!
//! Run with `cargo bench -p tollgate-token`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::SigningKey;

/// A claims set shaped like a Tollgate licence, padded to about 500 bytes.
fn licence_json() -> Vec<u8> {
    let features: Vec<String> = (0..14).map(|i| format!("\"feature-{i:02}\"")).collect();
    let json = format!(
        concat!(
            "{{\"iss\":\"https://origin.tollgate.example\",",
            "\"sub\":\"acct_01HZX9Q4ZK8Y3V6T2M1N0P7R5S\",",
            "\"aud\":\"edge.eu-west-1\",",
            "\"iat\":\"2026-11-28T00:00:00+00:00\",",
            "\"exp\":\"2026-12-28T00:00:00+00:00\",",
            "\"jti\":\"lic_7f3c2a9e-5b1d-4e8a-9c6f-0d2b4a8e1f3c\",",
            "\"plan\":\"enterprise\",\"seats\":250,",
            "\"regions\":[\"eu-west-1\",\"eu-central-1\",\"us-east-1\"],",
            "\"features\":[{}]}}"
        ),
        features.join(",")
    );
    json.into_bytes()
}

fn paseto(c: &mut Criterion) {
    let secret = SigningKey::from_bytes(&[7u8; 32]);
    let public = secret.verifying_key();
    let message = licence_json();
    let footer = br#"{"kid":"origin-2026-11"}"#;
    let implicit = b"tollgate-licence";
    let token = match tollgate_token::sign(&secret, &message, footer, implicit) {
        Ok(token) => token,
        Err(error) => panic!("bench fixture must sign: {error}"),
    };

    let mut group = c.benchmark_group("paseto_v4_public");
    group.throughput(Throughput::Bytes(message.len() as u64));
    group.bench_function(format!("sign_{}_bytes", message.len()), |b| {
        b.iter(|| {
            tollgate_token::sign(
                black_box(&secret),
                black_box(&message),
                black_box(footer),
                black_box(implicit),
            )
        })
    });
    group.bench_function(format!("verify_{}_bytes", message.len()), |b| {
        b.iter(|| {
            tollgate_token::verify(
                black_box(&public),
                black_box(&token),
                black_box(Some(footer.as_slice())),
                black_box(implicit),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, paseto);
criterion_main!(benches);
