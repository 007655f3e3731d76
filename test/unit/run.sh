#!/usr/bin/env bash
# test/unit/run.sh -- build and run crypto_test: known vectors, and
# SHA256withRSA cross-checked both ways with the openssl command line.
# With VALGRIND=1 it runs under valgrind and fails on leaks or errors.
set -euo pipefail
cd "$(dirname "$0")"
make -s crypto_test
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/key.pem" 2>/dev/null
openssl req -new -x509 -key "$dir/key.pem" -subj /CN=payflow-unit -days 1 -out "$dir/cert.pem" 2>/dev/null
openssl x509 -in "$dir/cert.pem" -noout -serial | sed 's/^serial=//' >"$dir/serial.txt"
openssl x509 -in "$dir/cert.pem" -noout -pubkey >"$dir/pub.pem"
# A WeChat Pay v3 request message: method, path?query, timestamp, nonce, body.
printf 'GET\n/v3/pay/transactions/out-trade-no/PF000000000001-1?mchid=1900000001\n1700000000\nNONCE0123456789\n\n' >"$dir/msg.txt"
openssl dgst -sha256 -sign "$dir/key.pem" "$dir/msg.txt" | base64 -w0 >"$dir/cli_sig.b64"

runner=()
[ "${VALGRIND:-0}" = 1 ] && runner=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3)
status=0
"${runner[@]}" ./crypto_test "$dir" || status=$?
# The other direction: payflow's signature, checked by the openssl command line.
base64 -d "$dir/payflow_sig.b64" >"$dir/payflow_sig.bin"
if openssl dgst -sha256 -verify "$dir/pub.pem" -signature "$dir/payflow_sig.bin" "$dir/msg.txt" >/dev/null; then
    echo "ok - payflow's SHA256withRSA signature verifies with the openssl command line"
else
    echo "not ok - payflow's SHA256withRSA signature verifies with the openssl command line"
    status=1
fi
exit $status
