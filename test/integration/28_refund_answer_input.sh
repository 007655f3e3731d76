#!/usr/bin/env bash
# 28_refund_answer_input.sh -- a refund is believed made only from an
# answer about that refund, for the amount asked.  The test channel server
# serves a chosen refund object (POST /admin/payments {"refund_answer"}):
# WeChat Pay answering with another out_refund_no or another amount.refund,
# and Alipay's refund query with another out_request_no or another
# refund_amount, are channel errors (retried on the schedule; last_error
# says why) and the refund stays open.  The real answer then settles it,
# executed once at the channel.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 8
it_start_channel
it_fast_schedule
trap 'admin config "{\"refund_mode\":\"succeed\"}" >/dev/null; it_reset_settings; it_cleanup' EXIT
k=$IT_TMP/keys
sql "SELECT payflow.set_channel('it_ra_wx', 'wechatpay_v3', '$IT_CHANNEL_URL',
        jsonb_build_object('mchid', '1900000001', 'merchant_serial', '$(cat "$k/merchant_serial.txt")'),
        jsonb_build_object('merchant_private_key', \$k\$$(cat "$k/merchant_key.pem")\$k\$,
                           'platform_certificate', \$k\$$(cat "$k/platform_cert.pem")\$k\$,
                           'apiv3_key', '$(cat "$k/apiv3_key.txt")'))" >/dev/null
sql "SELECT payflow.set_channel('it_ra_ali', 'alipay', '$IT_CHANNEL_URL',
        '{\"app_id\": \"2021000000000001\", \"seller_id\": \"2088000000000001\"}',
        jsonb_build_object('app_private_key', \$k\$$(cat "$k/alipay_app_key.pem")\$k\$,
                           'alipay_public_key', \$k\$$(cat "$k/alipay_pub.pem")\$k\$))" >/dev/null

# paid_order DRIVER CHANNEL CUSTOMER: an order paid at the channel (the
# callback dropped, the worker recovers it); prints payment_no.
paid_order() {
    local payment_no
    payment_no=$(new_attempt "$3" 5000 "$2")
    admin payments "{\"channel\":\"$1\",\"payment_no\":\"$payment_no\",\"amount\":5000}" >/dev/null
    admin pay "{\"channel\":\"$1\",\"payment_no\":\"$payment_no\",\"callback\":\"drop\"}" >/dev/null
    wait_for 15 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$payment_no'" >/dev/null
    echo "$payment_no"
}
refund_answer() {  # refund_answer DRIVER PAYMENT_NO TEXT ("" serves the real one again)
    admin payments "$(psql -X -q -At -v c="$1" -v p="$2" -v a="$3" <<<"SELECT jsonb_build_object('channel', :'c', 'payment_no', :'p', 'refund_answer', :'a')")" >/dev/null
}
# refused REFUND_NO PATTERN: the refund's check records an error matching
# PATTERN while the refund stays open; prints "ok" or what it saw.
refused() {
    if wait_for 15 "SELECT c.last_error LIKE '$2' FROM payflow.pending_checks c
                    JOIN payflow.refunds r ON r.id = c.refund_id WHERE r.refund_no = '$1'" >/dev/null; then
        sql "SELECT CASE WHEN status IN ('requested', 'processing') THEN 'ok' ELSE status END
             FROM payflow.refunds WHERE refund_no = '$1'"
    else
        sql "SELECT r.status || ' | ' || coalesce(c.last_error, '') FROM payflow.refunds r
             LEFT JOIN payflow.pending_checks c ON c.refund_id = r.id WHERE r.refund_no = '$1'"
    fi
}

# --- WeChat Pay --------------------------------------------------------------
wx_no=$(paid_order wechatpay_v3 it_ra_wx "it-ra-wx-$$")
refund_answer wechatpay_v3 "$wx_no" "{\"refund_id\":\"50300000000000000000000000000001\",\"out_refund_no\":\"$wx_no-R9\",\"transaction_id\":\"4200000000000000000000000001\",\"out_trade_no\":\"$wx_no\",\"status\":\"SUCCESS\",\"amount\":{\"total\":5000,\"refund\":100,\"payer_total\":5000,\"payer_refund\":100,\"currency\":\"CNY\"}}"
wx_refund=$(sql "SELECT (payflow.request_refund(order_id, 100, 'merchant')).refund_no
                 FROM payflow.payments WHERE payment_no = '$wx_no'")
tap_is "$(refused "$wx_refund" "%answered about refund $wx_no-R9, not $wx_refund%")" "ok" \
    "WeChat: a SUCCESS about another out_refund_no does not settle the refund (a channel error, retried)"
refund_answer wechatpay_v3 "$wx_no" "{\"refund_id\":\"50300000000000000000000000000001\",\"out_refund_no\":\"$wx_refund\",\"transaction_id\":\"4200000000000000000000000001\",\"out_trade_no\":\"$wx_no\",\"status\":\"SUCCESS\",\"amount\":{\"total\":5000,\"refund\":99,\"payer_total\":5000,\"payer_refund\":99,\"currency\":\"CNY\"}}"
tap_is "$(refused "$wx_refund" "%reports refund $wx_refund of 99, payflow asked 100%")" "ok" \
    "WeChat: a SUCCESS of 0.99 for a refund of 1.00 does not settle it"
refund_answer wechatpay_v3 "$wx_no" ""
wait_for 15 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$wx_refund'" >/dev/null
tap_ok $? "WeChat: the real answer settles it"
tap_is "$(admin_get "payments/$wx_no" | json "executions_by_refund_no.$wx_refund") $(admin_get "payments/$wx_no" | json refunded_amount)" \
    "1 100" "WeChat executed it once, for 100"

# --- Alipay: the refund query (the refund is first accepted without moving money)
admin config '{"refund_mode":"pending"}' >/dev/null
ali_no=$(paid_order alipay it_ra_ali "it-ra-ali-$$")
refund_answer alipay "$ali_no" "\"out_request_no\":\"$ali_no-R9\",\"refund_amount\":\"1.00\",\"refund_status\":\"REFUND_SUCCESS\""
ali_refund=$(sql "SELECT (payflow.request_refund(order_id, 100, 'merchant')).refund_no
                  FROM payflow.payments WHERE payment_no = '$ali_no'")
tap_is "$(refused "$ali_refund" "%answered about refund $ali_no-R9, not $ali_refund%")" "ok" \
    "Alipay: REFUND_SUCCESS about another out_request_no does not settle the refund"
refund_answer alipay "$ali_no" "\"out_request_no\":\"$ali_refund\",\"refund_amount\":\"0.99\",\"refund_status\":\"REFUND_SUCCESS\""
tap_is "$(refused "$ali_refund" "%refund_amount \"0.99\"%payflow asked $ali_refund of 100%")" "ok" \
    "Alipay: REFUND_SUCCESS of 0.99 for a refund of 1.00 does not settle it"
refund_answer alipay "$ali_no" ""
admin config '{"refund_mode":"succeed"}' >/dev/null
wait_for 15 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$ali_refund'" >/dev/null
tap_ok $? "Alipay: the real answer settles it"
tap_is "$(admin_get "payments/$ali_no" | json "executions_by_refund_no.$ali_refund") $(admin_get "payments/$ali_no" | json refunded_amount)" \
    "1 100" "Alipay executed it once, for 100"
