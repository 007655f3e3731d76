# payflow: PGXS build.  `make && make install` builds and installs the
# extension; `make installcheck` runs the pg_regress suite (sql/ and
# expected/) against a running server (PGHOST/PGPORT/PGUSER).
# The whole test suite, with a throwaway cluster, is test/run.sh.

EXTENSION = payflow
MODULE_big = payflow
OBJS = \
	src/payflow.o \
	src/guc.o \
	src/version.o \
	src/spi_util.o \
	src/state.o \
	src/statuses.o \
	src/route.o \
	src/local_shards.o \
	src/events.o \
	src/consumers.o \
	src/checks.o \
	src/cart.o \
	src/order.o \
	src/payment.o \
	src/refund.o \
	src/review.o \
	src/http.o \
	src/channel.o \
	src/channel_parse.o \
	src/channel_http_json.o \
	src/channel_wechatpay_v3.o \
	src/channel_stripe.o \
	src/channel_alipay.o \
	src/channel_hosts.o \
	src/statement_parse.o \
	src/crypto.o \
	src/notification.o \
	src/status_counts.o \
	src/retention.o \
	src/reconcile.o \
	src/webhook_sign.o \
	src/webhook.o \
	src/worker_state.o \
	src/statement.o \
	src/worker.o

DATA = $(wildcard sql/payflow--*.sql)
DOCS = README.md

REGRESS = $(patsubst sql/%.sql,%,$(filter-out sql/payflow--%,$(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --load-extension=payflow

PG_CPPFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Werror
SHLIB_LINK = -lcurl -lssl -lcrypto -lz


PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)


# PGXS tracks no header dependencies here (PostgreSQL was configured without
# --enable-depend): rebuild every object when a header of ours changes, so
# an incremental build never mixes two layouts of one struct.
$(OBJS): $(wildcard src/*.h)
