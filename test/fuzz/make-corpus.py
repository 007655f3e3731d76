#!/usr/bin/env python3
"""test/fuzz/make-corpus.py -- writes the seed corpus test/fuzz/corpus/<target>/.

Real-looking messages of each protocol in the harness's input format
(fuzz.h): directives (#sign, #status=, #resource, ...), headers, an empty
line, the body.  Re-run after changing it; inputs the fuzzer found worth
keeping (regressions) are added by hand as files named after the bug and
are left alone by this script.
"""
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def msg(directives=(), headers=(), body=""):
    lines = ["#" + d for d in directives] + ["%s: %s" % h for h in headers]
    return "\n".join(lines) + "\n\n" + body


def j(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def write(target, name, text):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    with open(os.path.join(ROOT, target, name), "w", encoding="utf-8") as f:
        f.write(text)


PNO, RNO = "P-FUZZ-1", "R-FUZZ-1"

# http_json (doc/http_json_protocol.md)
hj_paid = {"payment_no": PNO, "status": "succeeded", "amount": 1999, "currency": "CNY",
           "txn_id": "txn_8f3a2c", "paid_at": "2026-06-26T10:00:00Z"}
hj_failed = {"payment_no": PNO, "status": "failed", "failure_reason": "card_declined"}
write("http_json_notification", "paid", msg(["sign"], [("Content-Type", "application/json")],
      j(dict(id="evt_01J0", event="payment.succeeded", **hj_paid))))
write("http_json_notification", "failed", msg(["sign"], [("X-Payflow-Nonce", "n0nce42")],
      j(dict(id="evt_01J1", event="payment.failed", **hj_failed))))
write("http_json_notification", "refund", msg(["sign"], [], j({"id": "evt_01J2", "event": "refund.succeeded",
      "refund_no": RNO, "refund_id": "rf_77", "status": "succeeded"})))
write("http_json_notification", "other-event", msg(["sign"], [], j({"id": "evt_01J3", "event": "ping"})))
write("http_json_notification", "several-v1", msg(["sign"], [("X-Payflow-Signature", "v0=abc, v1=00ff")],
      j({"id": "evt_01J4", "event": "payment.pending", "payment_no": PNO, "status": "pending"})))
write("http_json_notification", "stale", msg(["sign=1000000000"], [], j(dict(event="payment.succeeded", **hj_paid))))
write("http_json_notification", "unsigned", msg([], [("X-Payflow-Timestamp", "1767225600"),
      ("X-Payflow-Nonce", "abc"), ("X-Payflow-Signature", "v1=00ff, v1=deadbeef")],
      j(dict(event="payment.succeeded", **hj_paid))))
write("http_json_query", "paid", msg(["sign"], [("Content-Type", "application/json")], j(hj_paid)))
write("http_json_query", "pending", msg(["sign"], [], j({"payment_no": PNO, "status": "pending"})))
write("http_json_query", "failed", msg(["sign"], [], j(hj_failed)))
write("http_json_query", "closed", msg(["sign"], [], j({"payment_no": PNO, "status": "closed"})))
write("http_json_query", "not-found", msg(["sign", "status=404"], [],
      j({"error": {"code": "payment_not_found", "message": "no such payment"}})))
write("http_json_query", "other-payment", msg(["sign"], [], j(dict(hj_paid, payment_no="P-OTHER"))))
write("http_json_query", "unsigned", msg([], [], j(hj_paid)))
write("http_json_query", "timeout", msg(["error=Timeout was reached"], [], ""))
write("http_json_query", "server-error", msg(["sign", "status=503"], [], ""))
write("http_json_close", "closed", msg(["sign"], [], j({"payment_no": PNO, "status": "closed"})))
write("http_json_close", "already-paid", msg(["sign", "status=409"], [],
      j({"error": {"code": "payment_succeeded", "message": "already paid"}})))
write("http_json_close", "not-found", msg(["sign", "status=404"], [], j({"error": {"code": "payment_not_found"}})))
write("http_json_refund", "succeeded", msg(["sign"], [], j({"refund_no": RNO, "refund_id": "rf_77",
      "payment_no": PNO, "amount": 999, "status": "succeeded"})))
write("http_json_refund", "pending-query", msg(["sign", "channel_ref=rf_77"], [],
      j({"refund_no": RNO, "refund_id": "rf_77", "status": "pending"})))
write("http_json_refund", "refused", msg(["sign", "status=409"], [],
      j({"error": {"code": "refund_exceeds_payment"}})))

# wechatpay_v3 (API v3: transactions, refunds, encrypted callbacks)
tx = {"mchid": "1900000109", "appid": "wxd678efh567hg6787", "out_trade_no": PNO,
      "transaction_id": "4200000985202606260000000001", "trade_type": "NATIVE",
      "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
      "attach": "", "success_time": "2026-06-26T10:00:00+08:00",
      "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
      "amount": {"total": 1999, "payer_total": 1999, "currency": "CNY", "payer_currency": "CNY"}}
notpay = {"mchid": "1900000109", "appid": "wxd678efh567hg6787", "out_trade_no": PNO,
          "trade_state": "NOTPAY", "trade_state_desc": "订单未支付", "amount": {"payer_currency": "CNY"}}
envelope = lambda kind, event, summary: {
    "id": "EV-2026062610000000001", "create_time": "2026-06-26T10:00:01+08:00",
    "resource_type": "encrypt-resource", "event_type": event, "summary": summary,
    "resource": {"original_type": kind, "algorithm": "AEAD_AES_256_GCM",
                 "ciphertext": "@CIPHERTEXT@", "associated_data": kind, "nonce": "fdasflkja484"}}
refund_res = {"mchid": "1900000109", "out_trade_no": PNO, "transaction_id": tx["transaction_id"],
              "out_refund_no": RNO, "refund_id": "50000000382019052709732678859",
              "refund_status": "SUCCESS", "success_time": "2026-06-27T10:00:00+08:00",
              "user_received_account": "招商银行信用卡0403",
              "amount": {"total": 1999, "refund": 999, "payer_total": 1999, "payer_refund": 999}}
write("wechatpay_v3_notification", "paid", msg(["sign", "resource"], [("Content-Type", "application/json")],
      j(envelope("transaction", "TRANSACTION.SUCCESS", "支付成功")) + "\n#resource\n" + j(tx)))
write("wechatpay_v3_notification", "refund", msg(["sign", "resource"], [],
      j(envelope("refund", "REFUND.SUCCESS", "退款成功")) + "\n#resource\n" + j(refund_res)))
write("wechatpay_v3_notification", "bad-resource", msg(["sign"], [],
      j(envelope("transaction", "TRANSACTION.SUCCESS", "支付成功")).replace("@CIPHERTEXT@", "AAAA")))
write("wechatpay_v3_notification", "wrong-serial", msg(["sign", "resource"], [("Wechatpay-Serial", "5157F09EFDC096DE")],
      j(envelope("transaction", "TRANSACTION.SUCCESS", "支付成功")) + "\n#resource\n" + j(tx)))
write("wechatpay_v3_notification", "unsigned", msg([], [("Wechatpay-Timestamp", "1767225600"),
      ("Wechatpay-Nonce", "abc"), ("Wechatpay-Signature", "c2lnbmF0dXJl"),
      ("Wechatpay-Serial", "PUB_KEY_ID_0114232134912410000000000000001")],
      j(envelope("transaction", "TRANSACTION.SUCCESS", "支付成功"))))
write("wechatpay_v3_query", "paid", msg(["sign"], [("Request-ID", "08F78BB5AF0610D302")], j(tx)))
write("wechatpay_v3_query", "refunded", msg(["sign"], [], j(dict(tx, trade_state="REFUND"))))
write("wechatpay_v3_query", "notpay", msg(["sign"], [], j(notpay)))
write("wechatpay_v3_query", "payerror", msg(["sign"], [], j(dict(notpay, trade_state="PAYERROR", trade_state_desc="银行卡余额不足"))))
write("wechatpay_v3_query", "closed", msg(["sign"], [], j(dict(notpay, trade_state="CLOSED"))))
write("wechatpay_v3_query", "not-exist", msg(["sign", "status=404"], [], j({"code": "ORDER_NOT_EXIST", "message": "订单不存在"})))
write("wechatpay_v3_query", "unsigned", msg([], [], j(tx)))
write("wechatpay_v3_close", "closed", msg(["sign", "status=204"], [], ""))
write("wechatpay_v3_close", "already-closed", msg(["sign", "status=400"], [], j({"code": "ORDER_CLOSED", "message": "订单已关闭"})))
write("wechatpay_v3_close", "paid", msg(["sign", "status=400"], [], j({"code": "ORDERPAID", "message": "订单已支付"})))
write("wechatpay_v3_refund", "processing", msg(["sign"], [], j({"refund_id": "50000000382019052709732678859",
      "out_refund_no": RNO, "transaction_id": tx["transaction_id"], "out_trade_no": PNO, "channel": "ORIGINAL",
      "user_received_account": "招商银行信用卡0403", "status": "PROCESSING", "create_time": "2026-06-27T10:00:00+08:00",
      "amount": {"total": 1999, "refund": 999, "payer_total": 1999, "payer_refund": 999, "currency": "CNY"}})))
write("wechatpay_v3_refund", "success-query", msg(["sign", "channel_ref=50000000382019052709732678859"], [],
      j({"refund_id": "50000000382019052709732678859", "out_refund_no": RNO, "status": "SUCCESS"})))
write("wechatpay_v3_refund", "refused", msg(["sign", "status=403"], [], j({"code": "NOT_ENOUGH", "message": "基本账户余额不足"})))

# stripe (PaymentIntents, refunds, events)
pi = {"id": "pi_3MtwBwLkdIwHu7ix28a3tqPa", "object": "payment_intent", "amount": 1999,
      "amount_received": 1999, "currency": "usd", "status": "succeeded",
      "latest_charge": "ch_3MtwBwLkdIwHu7ix28a3tqPa", "created": 1782468000, "livemode": False,
      "metadata": {"payment_no": PNO}, "payment_method_types": ["card"]}
pi_open = dict(pi, status="requires_payment_method", amount_received=0, latest_charge=None,
               last_payment_error={"code": "card_declined", "decline_code": "insufficient_funds"})
re = {"id": "re_3MtwBwLkdIwHu7ix0Z1xQ9rD", "object": "refund", "amount": 999,
      "charge": pi["latest_charge"], "currency": "usd", "payment_intent": pi["id"],
      "status": "succeeded", "metadata": {"refund_no": RNO, "payment_no": PNO}}
event = lambda typ, obj: {"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event",
                          "api_version": "2024-06-20", "created": 1782468001, "livemode": False,
                          "type": typ, "data": {"object": obj}, "pending_webhooks": 1}
write("stripe_notification", "paid", msg(["sign"], [("Content-Type", "application/json; charset=utf-8")],
      j(event("payment_intent.succeeded", pi))))
write("stripe_notification", "failed", msg(["sign"], [], j(event("payment_intent.payment_failed", pi_open))))
write("stripe_notification", "refund", msg(["sign"], [], j(event("refund.updated", re))))
write("stripe_notification", "not-ours", msg(["sign"], [], j(event("payment_intent.succeeded", dict(pi, metadata={})))))
write("stripe_notification", "charge", msg(["sign"], [], j(event("charge.refunded", {"id": "ch_1", "object": "charge"}))))
write("stripe_notification", "two-v1", msg(["sign"], [("Stripe-Signature", "v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b")],
      j(event("payment_intent.canceled", dict(pi, status="canceled")))))
write("stripe_notification", "unsigned", msg([], [("Stripe-Signature", "t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd")],
      j(event("payment_intent.succeeded", pi))))
write("stripe_query", "paid", msg(["channel_ref=" + pi["id"]], [("Request-Id", "req_Xa1")], j(pi)))
write("stripe_query", "open", msg(["channel_ref=" + pi["id"]], [], j(pi_open)))
write("stripe_query", "search", msg([], [], j({"object": "search_result", "url": "/v1/payment_intents/search",
      "has_more": False, "next_page": None, "data": [pi]})))
write("stripe_query", "search-empty", msg([], [], j({"object": "search_result", "data": [], "has_more": False})))
write("stripe_query", "missing", msg(["channel_ref=pi_nope", "status=404"], [], j({"error": {"code": "resource_missing",
      "message": "No such payment_intent: 'pi_nope'", "param": "intent", "type": "invalid_request_error"}})))
write("stripe_query", "rate-limited", msg(["status=429"], [], j({"error": {"type": "rate_limit_error"}})))
write("stripe_close", "canceled", msg(["channel_ref=" + pi["id"]], [], j(dict(pi, status="canceled", cancellation_reason="abandoned"))))
write("stripe_close", "unexpected-state", msg(["channel_ref=" + pi["id"], "status=400"], [],
      j({"error": {"code": "payment_intent_unexpected_state", "payment_intent": pi, "type": "invalid_request_error"}})))
write("stripe_close", "missing", msg(["channel_ref=pi_nope", "status=404"], [], j({"error": {"code": "resource_missing"}})))
write("stripe_close", "no-intent", msg([], [], ""))
write("stripe_refund", "succeeded", msg([], [("Idempotent-Replayed", "true")], j(re)))
write("stripe_refund", "pending-query", msg(["channel_ref=" + re["id"]], [], j(dict(re, status="pending"))))
write("stripe_refund", "declined", msg(["status=402"], [], j({"error": {"code": "charge_already_refunded"}})))

# the small parsers
for name, text in [("rfc3339-zulu", "2026-06-26T10:00:00Z"), ("rfc3339-offset", "2026-06-26T10:00:00+08:00"),
                   ("fraction", "2026-06-26T10:00:00.123456Z"), ("space", "2026-06-26 10:00:00"),
                   ("leap-second", "2026-12-31T23:59:60Z"), ("date-only", "2026-06-26"),
                   ("word", "now")]:
    write("timestamp", name, text)
write("stripe_signature", "valid", "t=1700000000,v1=@V1@\n" + j(event("payment_intent.succeeded", pi)))
write("stripe_signature", "several", "t=1700000000,v1=00,v0=ab,v1=@V1@,x=1\n{}")
write("stripe_signature", "stale", "t=1600000000,v1=@V1@\n{}")
write("stripe_signature", "malformed", "t=abc,v1\n{}")
write("response_headers", "wechat", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nWechatpay-Nonce: abc\r\n"
      "Wechatpay-Signature: c2ln\r\nWechatpay-Timestamp: 1767225600\r\nWechatpay-Serial: PUB_KEY_ID_01\r\n\r\n")
write("response_headers", "payflow", "X-Payflow-Timestamp:1767225600\r\nX-Payflow-Nonce:  n \t\r\nX-Payflow-Signature: v1=ab\r\n")

# alipay (OpenAPI gateway, RSA2): form notifications signed over the sorted
# fields without sign and sign_type; answers signed over the exact text of
# "<method>_response".  @NOW@ is the signing time in Beijing time, @SIGN@ the
# signature (fuzz.h, targets/alipay.c).
from urllib.parse import quote


def form(fields):
    return "&".join("%s=%s" % (quote(k, safe=""), quote(v, safe="")) for k, v in fields.items())


def ali_answer(method, obj, sign="@SIGN@", spaced=False):
    name = method.replace(".", "_") + "_response"
    if spaced:  # Alipay's own spacing: the driver must verify the raw text
        inner = json.dumps(obj, ensure_ascii=False, indent=1)
        return '{"%s" : %s ,\n "sign":"%s"}' % (name, inner, sign)
    return j({name: obj, "sign": sign}) if sign is not None else j({name: obj})


TRADE_NO = "2026120222001446880500000001"
ali_notify = {"gmt_create": "@NOW@", "charset": "utf-8", "seller_email": "shop@example.com",
              "subject": "订单 P-FUZZ-1", "buyer_id": "2088102177846880", "invoice_amount": "19.99",
              "notify_id": "2026120200222100000044880000000001", "fund_bill_list": j([{"amount": "19.99", "fundChannel": "ALIPAYACCOUNT"}]),
              "notify_type": "trade_status_sync", "trade_status": "TRADE_SUCCESS", "receipt_amount": "19.99",
              "buyer_pay_amount": "19.99", "app_id": "2021000000000001", "seller_id": "2088000000000001",
              "gmt_payment": "@NOW@", "notify_time": "@NOW@", "version": "1.0", "out_trade_no": PNO,
              "total_amount": "19.99", "trade_no": TRADE_NO, "auth_app_id": "2021000000000001",
              "buyer_logon_id": "159****5620", "point_amount": "0.00"}


def ali_notification(name, directives=("sign",), drop=(), signed=True, **changes):
    fields = {k: v for k, v in dict(ali_notify, **changes).items() if k not in drop}
    body = form(fields) + ("&sign_type=RSA2&sign=@SIGN@" if signed else "")
    write("alipay_notification", name, msg(list(directives), [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")], body).replace("%40NOW%40", "@NOW@"))


ali_notification("paid")
ali_notification("finished", trade_status="TRADE_FINISHED")
ali_notification("wait-buyer-pay", drop=("gmt_payment",), trade_status="WAIT_BUYER_PAY")
ali_notification("closed", trade_status="TRADE_CLOSED")
ali_notification("unknown-status", trade_status="TRADE_WEIRD")
ali_notification("refund", trade_status="TRADE_SUCCESS", out_biz_no=RNO, refund_fee="9.99", gmt_refund="@NOW@")
ali_notification("amount-30.00", total_amount="30.00")
ali_notification("amount-30.001", total_amount="30.001")
ali_notification("amount-leading-space", total_amount=" 30")
ali_notification("amount-no-decimals", total_amount="30")
ali_notification("amount-one-decimal", total_amount="30.0")
ali_notification("amount-negative", total_amount="-30.00")
ali_notification("amount-exponent", total_amount="3e1")
ali_notification("amount-huge", total_amount="92233720368547758.08")
ali_notification("missing-notify-id", drop=("notify_id",))
ali_notification("missing-out-trade-no", drop=("out_trade_no",))
ali_notification("missing-total-amount", drop=("total_amount",))
ali_notification("missing-gmt-payment", drop=("gmt_payment",))
ali_notification("missing-trade-no", drop=("trade_no",))
ali_notification("missing-app-id", drop=("app_id",))
ali_notification("wrong-app-id", app_id="2021000000000002")
ali_notification("wrong-seller-id", seller_id="2088000000000009")
ali_notification("charset-gbk", charset="GBK", subject="\u8ba2\u5355")
ali_notification("currency-usd", trans_currency="USD")
ali_notification("currency-invalid", trans_currency="usd1")
ali_notification("bad-notify-time", notify_time="2026-12-02T10:00:00")
ali_notification("gmt-payment-future", gmt_payment="2099-01-01 00:00:00")
ali_notification("nested-json", fund_bill_list=j([{"amount": "19.99", "fundChannel": "PCREDIT",
                 "extra": {"a": [1, {"b": [2, {"c": "深"}]}]}}]))
ali_notification("stale", directives=("sign=1000000000",))
write("alipay_notification", "sign-type-rsa", msg(["sign"], [], form(ali_notify).replace("%40NOW%40", "@NOW@")
      + "&sign_type=RSA&sign=@SIGN@"))
write("alipay_notification", "appended-sign", msg(["sign"], [], form(ali_notify).replace("%40NOW%40", "@NOW@")))
write("alipay_notification", "plus-encoding", msg(["sign"], [], form(dict(ali_notify, subject="a b+c")).replace("%20", "+").replace("%40NOW%40", "@NOW@") + "&sign=@SIGN@"))
write("alipay_notification", "duplicate-field", msg(["sign"], [], form(ali_notify).replace("%40NOW%40", "@NOW@") + "&trade_status=TRADE_CLOSED&sign=@SIGN@"))
write("alipay_notification", "no-equals", msg(["sign"], [], form(ali_notify).replace("%40NOW%40", "@NOW@") + "&orphan&sign=@SIGN@"))
ali_notification("unsigned", directives=(), signed=False)
write("alipay_notification", "bad-sign", msg([], [], form(dict(ali_notify, notify_time="2026-12-02 10:00:00",
      gmt_payment="2026-12-02 10:00:00", gmt_create="2026-12-02 09:59:50")) + "&sign_type=RSA2&sign=" + quote("c2lnbmF0dXJl+/==", safe="")))

ali_trade = {"code": "10000", "msg": "Success", "buyer_logon_id": "159****5620", "buyer_pay_amount": "19.99",
             "buyer_user_id": "2088102177846880", "invoice_amount": "19.99", "out_trade_no": PNO,
             "point_amount": "0.00", "receipt_amount": "19.99", "send_pay_date": "@NOW@",
             "total_amount": "19.99", "trade_no": TRADE_NO, "trade_status": "TRADE_SUCCESS",
             "fund_bill_list": [{"amount": "19.99", "fund_channel": "ALIPAYACCOUNT"}]}
not_exist = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST", "sub_msg": "交易不存在",
             "out_trade_no": PNO}
Q, C, R, RQ = "alipay.trade.query", "alipay.trade.close", "alipay.trade.refund", "alipay.trade.fastpay.refund.query"


def ali_query(name, obj=None, directives=("sign",), **kw):
    write("alipay_query", name, msg(list(directives), [("Content-Type", "text/html;charset=utf-8")],
          ali_answer(Q, obj if obj is not None else ali_trade, **kw)))


ali_query("paid")
ali_query("paid-spaced", spaced=True)
ali_query("finished", dict(ali_trade, trade_status="TRADE_FINISHED"))
ali_query("wait-buyer-pay", {k: v for k, v in ali_trade.items() if k not in ("send_pay_date",)} | {"trade_status": "WAIT_BUYER_PAY"})
ali_query("closed", dict(ali_trade, trade_status="TRADE_CLOSED", trade_no="2026120222001446880500000099"))
ali_query("closed-after-refund", dict(ali_trade, trade_status="TRADE_CLOSED", trade_no="TXN-FUZZ-1"))
ali_query("unknown-status", dict(ali_trade, trade_status="TRADE_WEIRD"))
ali_query("not-exist", not_exist)
ali_query("system-error", {"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error"})
ali_query("amount-30.001", dict(ali_trade, total_amount="30.001"))
ali_query("amount-leading-space", dict(ali_trade, total_amount=" 30"))
ali_query("amount-no-decimals", dict(ali_trade, total_amount="30"))
ali_query("amount-number", dict(ali_trade, total_amount=19.99))
ali_query("other-payment", dict(ali_trade, out_trade_no="P-OTHER"))
ali_query("missing-trade-no", {k: v for k, v in ali_trade.items() if k != "trade_no"})
ali_query("missing-send-pay-date", {k: v for k, v in ali_trade.items() if k != "send_pay_date"})
ali_query("currency-usd", dict(ali_trade, trans_currency="USD"))
ali_query("nested-json", dict(ali_trade, fund_bill_list=[{"a": [[[{"b": {"c": [1, 2, {"d": "深"}]}}]]]}]))
ali_query("unsigned", sign=None)
ali_query("bad-sign", sign="c2lnbmF0dXJl")
ali_query("unsigned-directive", directives=())
write("alipay_query", "error-response", msg(["sign"], [], j({"error_response": {"code": "40002", "msg": "Invalid Arguments",
      "sub_code": "isv.invalid-app-id", "sub_msg": "无效的AppID参数"}, "sign": "@SIGN@"})))
write("alipay_query", "duplicate-member", msg(["sign"], [], '{"alipay_trade_query_response":%s,"alipay_trade_query_response":%s,"sign":"@SIGN@"}'
      % (j(ali_trade), j(dict(ali_trade, trade_status="WAIT_BUYER_PAY")))))
write("alipay_query", "escaped-name", msg(["sign"], [], '{"alipay_trade_query\\u005fresponse":%s,"sign":"@SIGN@"}' % j(ali_trade)))
write("alipay_query", "http-502", msg(["sign", "status=502"], [], "<html>Bad Gateway</html>"))
write("alipay_query", "timeout", msg(["error=Timeout was reached"], [], ""))
write("alipay_query", "not-json", msg(["sign"], [], "alipay_trade_query_response=@SIGN@"))

write("alipay_close", "closed", msg(["sign"], [], ali_answer(C, {"code": "10000", "msg": "Success",
      "trade_no": TRADE_NO, "out_trade_no": PNO})))
write("alipay_close", "not-exist", msg(["sign"], [], ali_answer(C, not_exist, spaced=True)))
write("alipay_close", "status-error", msg(["sign"], [], ali_answer(C, {"code": "40004", "msg": "Business Failed",
      "sub_code": "ACQ.TRADE_STATUS_ERROR", "sub_msg": "交易状态不合法"})))
write("alipay_close", "unsigned", msg([], [], ali_answer(C, {"code": "10000", "msg": "Success"}, sign=None)))
write("alipay_close", "http-500", msg(["sign", "status=500"], [], ""))

refund_ok = {"code": "10000", "msg": "Success", "buyer_logon_id": "159****5620", "buyer_user_id": "2088102177846880",
             "fund_change": "Y", "gmt_refund_pay": "@NOW@", "out_trade_no": PNO, "refund_fee": "9.99",
             "send_back_fee": "9.99", "trade_no": TRADE_NO}
refund_q = {"code": "10000", "msg": "Success", "out_request_no": RNO, "out_trade_no": PNO, "refund_amount": "9.99",
            "refund_status": "REFUND_SUCCESS", "total_amount": "19.99", "trade_no": TRADE_NO}
write("alipay_refund", "succeeded", msg(["sign"], [], ali_answer(R, refund_ok)))
write("alipay_refund", "no-fund-change", msg(["sign"], [], ali_answer(R, dict(refund_ok, fund_change="N"), spaced=True)))
write("alipay_refund", "other-trade", msg(["sign"], [], ali_answer(R, dict(refund_ok, out_trade_no="P-OTHER"))))
write("alipay_refund", "refused", msg(["sign"], [], ali_answer(R, {"code": "40004", "msg": "Business Failed",
      "sub_code": "ACQ.SELLER_BALANCE_NOT_ENOUGH", "sub_msg": "卖家余额不足"})))
write("alipay_refund", "system-error", msg(["sign"], [], ali_answer(R, {"code": "40004", "msg": "Business Failed",
      "sub_code": "ACQ.SYSTEM_ERROR", "sub_msg": "系统错误"})))
write("alipay_refund", "unsigned", msg([], [], ali_answer(R, refund_ok, sign=None)))
write("alipay_refund", "query-success", msg(["sign", "channel_ref=" + TRADE_NO], [], ali_answer(RQ, refund_q)))
write("alipay_refund", "query-no-status", msg(["sign", "channel_ref=" + TRADE_NO], [],
      ali_answer(RQ, {k: v for k, v in refund_q.items() if k != "refund_status"})))
write("alipay_refund", "query-amount-three-decimals", msg(["sign", "channel_ref=" + TRADE_NO], [],
      ali_answer(RQ, {k: v for k, v in refund_q.items() if k != "refund_status"} | {"refund_amount": "9.990"})))
write("alipay_refund", "query-not-received", msg(["sign", "channel_ref=" + TRADE_NO], [],
      ali_answer(RQ, {"code": "10000", "msg": "Success"})))
write("alipay_refund", "query-unknown-status", msg(["sign", "channel_ref=" + TRADE_NO], [],
      ali_answer(RQ, dict(refund_q, refund_status="REFUND_PROCESSING"))))
