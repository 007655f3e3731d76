#!/usr/bin/env bash
# make-keys.sh DIR -- generate every key and secret payflow-test-channel
# needs, with the openssl command line only:
#   merchant_key.pem (PKCS#8), merchant_pub.pem, merchant_cert.pem, merchant_serial.txt
#   platform_key.pem (PKCS#8), platform_cert.pem, platform_serial.txt
#   alipay_app_key.pem, alipay_app_pub.pem (the app's RSA2 key pair),
#   alipay_key.pem, alipay_pub.pem (the "Alipay public key" pair),
#   apiv3_key.txt (32 ASCII bytes), stripe_sk.txt, stripe_whsec.txt,
#   http_json_secret.txt
# Serials are upper-case hex as "openssl x509 -serial" prints them.
# Prints only file names, never secrets.  Files are private to the owner.
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1
mkdir -p "$dir"
umask 077

# random alphanumeric string of length $1
random_alnum() {
	local out=""
	while [ ${#out} -lt "$1" ]; do
		out+=$(openssl rand -base64 48 | tr -dc 'A-Za-z0-9')
	done
	printf '%s' "${out:0:$1}"
}

# make_rsa NAME SUBJECT: NAME_key.pem, NAME_pub.pem, NAME_cert.pem, NAME_serial.txt
make_rsa() {
	local name=$1 subject=$2
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
		-out "$dir/${name}_key.pem" 2>/dev/null
	openssl pkey -in "$dir/${name}_key.pem" -pubout -out "$dir/${name}_pub.pem"
	openssl req -new -x509 -key "$dir/${name}_key.pem" -days 3650 -subj "$subject" \
		-set_serial "0x$(openssl rand -hex 8 | tr 'a-f' 'A-F' | sed 's/^0/1/')" \
		-out "$dir/${name}_cert.pem" 2>/dev/null
	openssl x509 -in "$dir/${name}_cert.pem" -noout -serial | sed 's/^serial=//' \
		>"$dir/${name}_serial.txt"
}

make_rsa merchant "/C=CN/O=payflow test merchant/CN=1900000001"
make_rsa platform "/C=CN/O=Tenpay.com/CN=Tenpay.com Root CA (payflow test platform)"
make_rsa alipay_app "/C=CN/O=payflow test merchant/CN=2021000000000001"
make_rsa alipay "/C=CN/O=Alipay.com/CN=Alipay public key (payflow test)"

random_alnum 32 >"$dir/apiv3_key.txt"
printf 'sk_test_%s' "$(random_alnum 40)" >"$dir/stripe_sk.txt"
printf 'whsec_%s' "$(random_alnum 32)" >"$dir/stripe_whsec.txt"
random_alnum 48 >"$dir/http_json_secret.txt"

echo "keys written to $dir:"
(cd "$dir" && ls -1 | sed 's/^/  /')
