#!/usr/bin/env bash
# test/unit/run.sh -- build and run crypto_test (src/crypto.c without a
# server): known vectors, and SHA256withRSA cross-checked both ways with the
# openssl command line.  Keys and certificates are made fresh in a temporary
# directory.  VALGRIND=1 runs the program under valgrind, which fails the
# run on leaked OpenSSL objects or memory errors.  The last line is
# "N passed, M failed"; the exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"
make -s crypto_test channel_parse_test statement_parse_test
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/key.pem" 2>/dev/null
openssl pkey -in "$dir/key.pem" -traditional -out "$dir/rsa_key.pem"
openssl pkey -in "$dir/key.pem" -pubout -out "$dir/pub.pem"
openssl pkey -in "$dir/key.pem" -aes256 -passout pass:secret -out "$dir/encrypted_key.pem"
openssl req -new -x509 -key "$dir/key.pem" -subj /CN=payflow-unit -days 1 \
    -out "$dir/cert.pem" 2>/dev/null
openssl req -new -x509 -key "$dir/key.pem" -subj /CN=payflow-unit-wechat -days 1 \
    -set_serial 0xD7CE59D1F522D701 -out "$dir/wechat_cert.pem" 2>/dev/null
openssl x509 -in "$dir/cert.pem" -noout -serial | sed 's/^serial=//' >"$dir/serial.txt"
# A WeChat Pay v3 request message: method, path?query, timestamp, nonce, body.
printf 'GET\n/v3/pay/transactions/out-trade-no/X?mchid=1\n1700000000\nNONCE\n\n' >"$dir/msg.txt"
openssl dgst -sha256 -sign "$dir/key.pem" "$dir/msg.txt" | base64 -w0 >"$dir/cli_sig.b64"

runner=()
if [ "${VALGRIND:-0}" = 1 ]; then
    runner=(valgrind -q --leak-check=full --error-exitcode=1)
fi
status=0
"${runner[@]}" ./crypto_test "$dir" >"$dir/out" || status=$?
cat "$dir/out"
passed=$(grep -c '^ok ' "$dir/out" || true)
failed=$(grep -c '^not ok ' "$dir/out" || true)
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
    echo "not ok - crypto_test exited with status $status${runner:+ (valgrind found errors or leaks)}"
    failed=$((failed + 1))
fi

# A plain-C test program: its TAP-like lines, counted; a crash is a failure.
run_program() {
    local program=$1 status=0
    "${runner[@]}" "./$program" >"$dir/$program.out" || status=$?
    cat "$dir/$program.out"
    passed=$((passed + $(grep -c '^ok ' "$dir/$program.out" || true)))
    failed=$((failed + $(grep -c '^not ok ' "$dir/$program.out" || true)))
    if [ "$status" != 0 ] && ! grep -q '^not ok ' "$dir/$program.out"; then
        echo "not ok - $program exited with status $status"
        failed=$((failed + 1))
    fi
}

# src/channel_parse.c: exact amounts, yuan, seconds, nonces, times, depth.
run_program channel_parse_test
# src/statement_parse.c: statement files to the documented layouts, gzip, SHA-1.
run_program statement_parse_test

# The other direction: payflow's signature, checked by the openssl command line.
if openssl dgst -sha256 -verify "$dir/pub.pem" -signature "$dir/payflow_sig.bin" \
        "$dir/msg.txt" >/dev/null 2>&1; then
    echo "ok - payflow's SHA256withRSA signature verifies with openssl dgst -verify"
    passed=$((passed + 1))
else
    echo "not ok - payflow's SHA256withRSA signature verifies with openssl dgst -verify"
    failed=$((failed + 1))
fi

# Standard Webhooks: payflow's v1 signature of webhook_body.txt under a
# 64-byte key, computed again by the openssl command line.
key_hex=$(printf '%s' 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==' |
    base64 -d | od -An -v -tx1 | tr -d ' \n')
cli_sig="v1,$({ printf 'evt_42.1700000000.'; cat "$dir/webhook_body.txt"; } |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key_hex" -binary | base64 -w0)"
if [ -s "$dir/webhook_sig.txt" ] && [ "$(cat "$dir/webhook_sig.txt")" = "$cli_sig" ]; then
    echo "ok - payflow's webhook signature equals openssl dgst -mac HMAC's ($cli_sig)"
    passed=$((passed + 1))
else
    echo "not ok - payflow's webhook signature equals openssl dgst -mac HMAC's"
    echo "#   payflow: $(cat "$dir/webhook_sig.txt" 2>/dev/null)"
    echo "#   openssl: $cli_sig"
    failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
