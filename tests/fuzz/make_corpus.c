/* make_corpus.c - writes valid inputs for a fuzz harness: `make_corpus fuzz_NAME DIR` */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt.h"
#include "crdt_json.h"

/* A few states of every type, built through the public mutators. */
static crdt_obj_t *sample(int type, int variant)
{
    crdt_obj_t *o = type == CRDT_TIMELINE ? crdt_timeline_new(variant ? 4 : 0)
                                          : crdt_obj_new((crdt_type_t)type);
    if (!o)
        return NULL;
    crdt_hlc_t c1, c2;
    crdt_hlc_init(&c1, 1, 1000);
    crdt_hlc_init(&c2, 2, 1000);
    for (int i = 0; i < 3 + variant * 4; i++) {
        char m[8];
        snprintf(m, sizeof(m), "m%d", i % 5);
        crdt_hlc_ts_t ts;
        crdt_hlc_tick(i % 2 ? &c1 : &c2, 1000 + (uint64_t)i / 2, &ts);
        switch (type) {
        case CRDT_GCOUNTER: crdt_gcounter_incr(o, 1 + (uint64_t)i % 3, 5, NULL); break;
        case CRDT_PNCOUNTER: crdt_pncounter_add(o, 1 + (uint64_t)i % 3, i % 2 ? -3 : 7, NULL); break;
        case CRDT_LWWREG: crdt_lwwreg_set(o, &ts, m, strlen(m), NULL); break;
        case CRDT_LWWSET:
            if (i % 3 == 2)
                crdt_lwwset_remove(o, m, strlen(m), &ts, NULL);
            else
                crdt_lwwset_add(o, m, strlen(m), &ts, NULL);
            break;
        case CRDT_ORSET:
            if (i % 3 == 2)
                crdt_orset_remove(o, m, strlen(m), NULL);
            else
                crdt_orset_add(o, 1 + (uint64_t)i % 3, m, strlen(m), NULL);
            break;
        case CRDT_TIMELINE:
            if (i % 3 == 2)
                crdt_timeline_remove(o, m, strlen(m), (double)i, NULL);
            else
                crdt_timeline_add(o, m, strlen(m), (double)i * 1.5, NULL);
            break;
        }
    }
    if (type == CRDT_LWWREG && variant) { /* the cleared register's encoding (a delete) */
        crdt_hlc_ts_t ts;
        crdt_hlc_tick(&c1, 2000, &ts);
        crdt_lwwreg_clear(o, &ts, NULL);
    }
    return o;
}

static int write_file(const char *dir, int n, const void *p, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/seed-%03d", dir, n);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    fwrite(p, 1, len, f);
    return fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: make_corpus fuzz_decode|fuzz_op|fuzz_json|fuzz_wire|... DIR\n");
        return 2;
    }
    const char *kind = argv[1], *dir = argv[2];
    int n = 0;
    if (!strcmp(kind, "fuzz_wire")) {
        /* selector 1: a token payload the harness signs; 2: base64url */
        static const char payload[] =
            "\x01{\"sub\":\"alice\",\"exp\":1900000000,\"read\":[\"\",\"feed\"],"
            "\"write\":[\"feed:\",{\"base64\":\"AP8=\"}]}";
        static const char b64[] = "\x02ZmVlZDox";
        write_file(dir, n++, payload, sizeof(payload) - 1);
        write_file(dir, n++, b64, sizeof(b64) - 1);
        /* selector 9: messages to the peer engine after a handshake, [len:u16][message] each:
         * a DELTAS of one entry per type, an ACK, a PING, a REPAIR of one entry */
        for (int t = CRDT_TYPE_MIN; t <= CRDT_TYPE_MAX; t++) {
            crdt_obj_t *o = sample(t, 0);
            if (!o)
                continue;
            crdt_buf_t obj = {0}, m = {0};
            crdt_obj_encode(o, &obj);
            uint8_t hdr[21] = {5}; /* DELTAS from 0 through 1, one entry */
            hdr[9] = 1;
            hdr[17] = 1;
            crdt_buf_append(&m, "\x09\0\0", 3);
            crdt_buf_append(&m, hdr, sizeof(hdr));
            uint8_t e[4] = {1, 2, 'k', (uint8_t)('0' + t)}; /* seq 1, key "k<t>" */
            crdt_buf_append(&m, e, sizeof(e));
            crdt_buf_put_varint(&m, obj.len);
            crdt_buf_append(&m, obj.data, obj.len);
            size_t len = m.len - 3;
            m.data[1] = (uint8_t)len;
            m.data[2] = (uint8_t)(len >> 8);
            crdt_buf_append(&m, "\x02\0\x06\x01\x01\0\x09", 7); /* ACK 1, PING */
            uint8_t rep[5] = {8, 1, 0, 0, 0};                   /* REPAIR, one entry */
            size_t rlen = 5 + 3 + crdt_varint_len(obj.len) + obj.len;
            uint8_t rl[2] = {(uint8_t)rlen, (uint8_t)(rlen >> 8)};
            crdt_buf_append(&m, rl, 2);
            crdt_buf_append(&m, rep, 5);
            crdt_buf_append(&m, e + 1, 3);
            crdt_buf_put_varint(&m, obj.len);
            crdt_buf_append(&m, obj.data, obj.len);
            write_file(dir, n++, m.data, m.len);
            crdt_buf_free(&obj);
            crdt_buf_free(&m);
            crdt_obj_free(o);
        }
        return 0;
    }
    if (!strcmp(kind, "fuzz_crdt_v1")) {
        /* selector byte (bit 0: a server message, bit 1: with limits), then the message */
        static const char *const msgs[] = {
            "\x00{\"type\":\"hello\",\"client\":\"phone-7f3a\",\"cursor\":1041,\"token\":\"ab.cd\"}",
            "\x00{\"type\":\"subscribe\",\"id\":1,\"keys\":[\"user:42\",{\"base64\":\"AP8=\"}],"
            "\"prefixes\":[\"feed:\",\"\"],\"since\":1041}",
            "\x02{\"type\":\"unsubscribe\",\"id\":2,\"keys\":[\"user:42\"],\"prefixes\":[]}",
            "\x00{\"type\":\"apply\",\"id\":41,\"key\":\"feed:12\",\"op\":{\"type\":"
            "\"timeline\",\"op\":\"add\",\"member\":\"post:3\",\"score\":1700000400}}",
            "\x00{\"type\":\"apply\",\"id\":43,\"key\":{\"base64\":\"dGFncw==\"},\"delta\":{\"type\":"
            "\"gcounter\",\"state\":{}}}",
            "\x00{\"type\":\"ping\"}",
            "\x01{\"type\":\"welcome\",\"node\":1,\"seq\":1187,\"session\":\"9f2c4be01d7a3356\","
            "\"subject\":\"alice\",\"expires\":1700003600,\"limits\":{\"max_message\":1048576,"
            "\"max_subscriptions\":1024,\"send_queue\":8388608,\"idle_timeout\":60,"
            "\"max_errors\":32}}",
            "\x01{\"type\":\"subscribed\",\"id\":1,\"cursor\":1187}",
            "\x01{\"type\":\"unsubscribed\",\"id\":2}",
            "\x01{\"type\":\"ack\",\"id\":41,\"seq\":1190,\"applied\":false,\"duplicate\":true}",
            "\x01{\"type\":\"pong\"}",
            "\x01{\"type\":\"error\",\"id\":41,\"code\":\"wrong_type\",\"message\":\"the key "
            "holds type pncounter, not orset\"}",
            "\x01{\"type\":\"error\",\"code\":\"something_new\"}",
        };
        for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++)
            write_file(dir, n++, msgs[i], strlen(msgs[i] + 1) + 1);
        /* change messages with a state of every type */
        for (int t = CRDT_TYPE_MIN; t <= CRDT_TYPE_MAX; t++) {
            crdt_obj_t *o = sample(t, 1);
            json_t *j = o ? crdt_obj_to_json(o) : NULL;
            char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
            if (text) {
                size_t cap = strlen(text) + 128;
                char *msg = malloc(cap);
                int len = msg ? snprintf(msg, cap,
                                         "%c{\"type\":\"change\",\"cursor\":%d,\"key\":"
                                         "\"a2V5\",\"seq\":%d,\"%s\":%s}",
                                         1, t, t, t % 2 ? "state" : "delta", text)
                              : 0;
                if (len > 0)
                    write_file(dir, n++, msg, (size_t)len);
                free(msg);
            }
            free(text);
            json_decref(j);
            crdt_obj_free(o);
        }
        return 0;
    }
    if (!strcmp(kind, "fuzz_crdt_v1_bin")) {
        /* selector byte (bit 0: a server message, bit 1: with limits), then a binary message
         * (gateway/proto/crdt_v1_bin.h) */
        static const uint8_t sub[] = {0, 0x01, 1, 1, 5, 3, 0, 2, 'k', '1', 1, 0, 1, 2, 'f', ':'};
        static const uint8_t unsub[] = {2, 0x02, 2, 1, 0, 2, 'k', '1'};
        static const uint8_t ack[] = {1, 0x42, 3, 0xa9, 0x02, 0x86, 0x09};
        static const uint8_t subd[] = {1, 0x43, 1, 0xa3, 0x09};
        write_file(dir, n++, sub, sizeof(sub));
        write_file(dir, n++, unsub, sizeof(unsub));
        write_file(dir, n++, ack, sizeof(ack));
        write_file(dir, n++, subd, sizeof(subd));
        /* applies (client) and changes (server) with a state of every type */
        for (int t = CRDT_TYPE_MIN; t <= CRDT_TYPE_MAX; t++) {
            crdt_obj_t *o = sample(t, 1);
            crdt_buf_t b = {0};
            for (int side = 0; o && side < 2; side++) {
                b.len = 0;
                static const uint8_t apply_head[] = {0, 0x03, 41, 3, 'k', 'e', 'y'};
                static const uint8_t change_head[] = {1, 0x41, 7, 0, 7, 3, 'k', 'e', 'y'};
                uint8_t head[sizeof(change_head)];
                size_t hl = side ? sizeof(change_head) : sizeof(apply_head);
                memcpy(head, side ? change_head : apply_head, hl);
                if (side)
                    head[3] = (uint8_t)(t % 2); /* full state or delta */
                if (crdt_buf_append(&b, head, hl) == 0 && crdt_obj_encode(o, &b) == 0)
                    write_file(dir, n++, b.data, b.len);
            }
            crdt_buf_free(&b);
            crdt_obj_free(o);
        }
        return 0;
    }
    if (!strcmp(kind, "fuzz_roshi_scan")) {
        /* selector byte (even: tuples, odd: keys), then a roshi body */
        static const char *const bodies[] = {
            "0[{\"key\":\"Zm9v\",\"score\":1,\"member\":\"YQ==\"},"
            "{\"key\":\"Zm9v\",\"score\":-2.5e3,\"member\":\"Yg==\"}]",
            "0 [ { \"member\" : null , \"score\" : 0.125 , \"key\" : \"YmFy\" } ] x",
            "0[{\"key\":\"Zm9v\",\"score\":12345678901234567890123,\"key\":\"YQ==\"},{}]",
            "0[{\"KEY\":\"Zm9v\",\"score\":1e400,\"member\":\"Y\\u003d\\u003d\"},null]",
            "0[{\"key\":\"YQ==\",\"score\":1700000000.125},{\"score\":-0.5},{\"score\":-0}]",
            /* the compact shape and the integer scores the scanner reads on its fast paths */
            "0[{\"key\":\"Zm9v\",\"score\":123456789012345,\"member\":\"YQ==\"},"
            "{\"key\":\"Zm9v\",\"score\":-1234567890123456,\"member\":\"YQ==\"},"
            "{\"key\":\"Zm9v\",\"score\":17.,\"member\":\"YQ==\"},"
            "{\"key\":\"Zm9v\",\"score\":9e1,\"member\":null}]",
            "1[\"Zm9v\",\"YmFy\",\"Zm9v\"]",
            "1 [\"\", null, \"/w==\"]",
        };
        for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
            write_file(dir, n++, bodies[i], strlen(bodies[i]));
        return 0;
    }
    if (!strcmp(kind, "fuzz_token")) {
        /* selector 1: "kid\npayload" the harness signs; 2: a key ring file; 0: a whole token */
        static const char payload[] =
            "\x01k-1\n{\"sub\":\"alice\",\"exp\":1900000000,\"read\":[\"\",\"feed\"],"
            "\"write\":[\"feed:\",{\"base64\":\"AP8=\"}]}";
        static const char ring[] = "\x02# ring\nk0:0123456789abcdef\r\nk1:fedcba9876543210xx\n";
        static const char whole[] = "\x00k0.eyJleHAiOjF9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        write_file(dir, n++, payload, sizeof(payload) - 1);
        write_file(dir, n++, ring, sizeof(ring) - 1);
        write_file(dir, n++, whole, sizeof(whole) - 1);
        return 0;
    }
    if (!strcmp(kind, "fuzz_apply_op")) {
        /* the key selector byte, then a REST op body of every type */
        static const char *const ops[] = {
            "0{\"type\":\"gcounter\",\"op\":\"incr\",\"by\":3}",
            "1{\"type\":\"pncounter\",\"op\":\"decr\"}",
            "2{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"hi\"}",
            "3{\"type\":\"lwwset\",\"op\":\"add\",\"members\":[\"a\",{\"base64\":\"AP8=\"}]}",
            "0{\"type\":\"orset\",\"op\":\"remove\",\"member\":\"a\"}",
            "1{\"type\":\"timeline\",\"op\":\"add\",\"entries\":[{\"member\":\"m\","
            "\"score\":1.5}]}",
            "2{\"op\":\"add\",\"member\":{\"base64\":\"bQ==\"},\"score\":2}",
            "3{\"op\":\"merge\",\"state\":{\"type\":\"gcounter\",\"state\":{\"3\":4}}}",
            /* deletes: of a key's own type, of a gcounter (refused), without a type */
            "1{\"type\":\"timeline\",\"op\":\"delete\"}",
            "0{\"type\":\"gcounter\",\"op\":\"delete\"}",
            "3{\"op\":\"delete\"}",
            "2{\"op\":\"merge\",\"state\":{\"type\":\"lwwreg\",\"state\":{\"ts\":{\"ms\":9,"
            "\"c\":0,\"node\":2},\"cleared\":true}}}",
        };
        for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
            write_file(dir, n++, ops[i], strlen(ops[i]));
        return 0;
    }
    if (!strcmp(kind, "fuzz_redis_parse")) {
        /* replies the Redis store reads: CLUSTER SLOTS, a redirect, INFO, CRDT.LOG.READ */
        static const char *const seeds[] = {
            "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n",
            "-MOVED 3999 127.0.0.1:6381\r\n", "-ASK 1 h:2\r\n",
            "$33\r\ncrdt_node_id:7\r\ncluster_enabled:1\r\n",
            "*3\r\n$34\r\n00000000000000aa:1796306283614-0:1\r\n+ok\r\n*1\r\n*3\r\n$3\r\n1-0\r\n$1\r\nk\r\n$1\r\nd\r\n",
            "redis://127.0.0.1:6379,localhost:7000",
            "-WRONGTYPE key 3 (argument 7) holds a gcounter, not a timeline\r\n",
            "-WRONGTYPE key 1 (argument 1) holds a Redis string, not a timeline\r\n"};
        for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
            write_file(dir, n++, seeds[i], strlen(seeds[i]));
        return 0;
    }
    if (!strcmp(kind, "fuzz_redis_replies")) {
        /* crdt.so's replies as the Redis store reads them (shapes of tests/test_redis_log.c and
         * tests/test_redis_rsx.c): CRDT.LOG.POLL with entries with and without an origin, a
         * truncated log, CRDT.RSX.OPEN / RECV / DIFFS (a nil name) / ITEMS / DIGEST, CRDT.TYPE,
         * SCAN */
        static const char *const seeds[] = {
            "*2\r\n*2\r\n$29\r\ncrdt:log:{x}:00000000000000aa\r\n*3\r\n$34\r\n00000000000000aa:1796306283614-0:1\r\n+ok\r\n"
            "*2\r\n*3\r\n$3\r\n1-0\r\n$1\r\nk\r\n$1\r\nd\r\n*4\r\n$3\r\n1-1\r\n$1\r\nk\r\n"
            "$1\r\nd\r\n:7\r\n:0\r\n",
            "*3\r\n*2\r\n$3\r\nlga\r\n*3\r\n$34\r\n00000000000000ab:1796306283614-7:9\r\n+truncated\r\n*0\r\n*2\r\n$3\r\nlgb\r\n"
            "*3\r\n$1\r\n$\r\n+ok\r\n*0\r\n:1\r\n",
            "*1\r\n:0\r\n", "*3\r\n:1\r\n:0\r\n:1\r\n",
            "*2\r\n$6\r\nsess-1\r\n$4\r\nmsg1\r\n", "*2\r\n$6\r\nsess-2\r\n$0\r\n\r\n",
            "*2\r\n$5\r\nreply\r\n:1\r\n", "*2\r\n$0\r\n\r\n:0\r\n",
            "*3\r\n*3\r\n$1\r\na\r\n:1\r\n:12\r\n*3\r\n$-1\r\n:2\r\n:13\r\n*3\r\n$1\r\nb\r\n:3\r\n"
            ":13\r\n",
            "*2\r\n*3\r\n$1\r\na\r\n:12\r\n:987654321\r\n*3\r\n$1\r\nb\r\n:2305843009213693950\r\n"
            ":-5\r\n",
            "*4\r\n:42\r\n:1\r\n:2\r\n:3\r\n",
            "+lwwset\r\n", "$8\r\ntimeline\r\n", "+none\r\n",
            "*2\r\n$2\r\n17\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n", "*2\r\n$1\r\n0\r\n*0\r\n"};
        for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
            write_file(dir, n++, seeds[i], strlen(seeds[i]));
            /* CRDT.TLRANGE / TLRANGEBYSCORE WITHSCORES as crdt.so writes them (%.17g scores, inf,
             * -0, an empty and a binary member) and some it never writes */
#define SEED(s)                                                                                    \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
        static const struct {
            const char *p;
            size_t len;
        } ranges[] = {
            SEED("*0\r\n"),
            SEED("*4\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\na\r\n$19\r\n0.30000000000000004\r\n"),
            SEED("*6\r\n$0\r\n\r\n$3\r\ninf\r\n$2\r\n\x00\xff\r\n$2\r\n-0\r\n$1\r\nz\r\n"
                 "$24\r\n-1.7976931348623157e+308\r\n"),
            SEED("*2\r\n$1\r\nm\r\n$4\r\n-inf\r\n"),
            SEED("*2\r\n$1\r\nm\r\n$3\r\nnan\r\n"),
            SEED("*2\r\n$1\r\nm\r\n$4\r\n0x10\r\n"),
            SEED("*1\r\n$1\r\nm\r\n"),
            SEED("*2\r\n:1\r\n$1\r\n1\r\n"),
            SEED("*2\r\n$1\r\nm\r\n:1\r\n"),
            SEED("$3\r\n1e5\r\n"),
        };
#undef SEED
        for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
            write_file(dir, n++, ranges[i].p, ranges[i].len);
        return 0;
    }
    if (!strcmp(kind, "fuzz_web")) {
        /* selector 0: a URL path; 1: a --cors-origin list; 2: "origin\nhost"; 3: "hosts\nHost" */
        static const char *const seeds[] = {"0/",
                                            "0/app.js",
                                            "0/a/b/",
                                            "0/../etc/passwd",
                                            "0/.git/x",
                                            "1http://a.example,https://B.example:8443",
                                            "1http://[::1]:80",
                                            "2http://127.0.0.1:7379\n127.0.0.1:7379",
                                            "2null\nx",
                                            "2https://b.example:8443\n",
                                            "3Feed.Example.,b-1.internal\nfeed.example:7379",
                                            "3a\n[::1]:7379",
                                            "3\nlocalhost"};
        for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
            write_file(dir, n++, seeds[i], strlen(seeds[i]));
        return 0;
    }
    if (!strcmp(kind, "fuzz_logpos")) {
        static const char *const seeds[] = {"0", "$", "00000000000000ab:1796306283614-0:1",
                                            "ffffffffffffffff:18446744073709551615-3:42",
                                            "crdt:log:{0d}:7115bbe1920aa6e0",
                                            "crdt:log:{c}:68bd826262c40713"};
        for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
            write_file(dir, n++, seeds[i], strlen(seeds[i]));
        /* change-log entry values (logpos.h): without and with an origin, an empty key */
        write_file(dir, n++, "\x0c\x66\x65\x65\x64\x3a\x31\x02\x06\x00\x01", 11); /* feed:1 */
        write_file(dir, n++, "\x09{o}k\x87\x01\x03\x01", 9);
        write_file(dir, n++, "\x00", 1);
        return 0;
    }
    if (!strcmp(kind, "fuzz_logval")) {
        /* change-log values (logval.h): empty, one entry, trimmed with two groups */
        write_file(dir, n++, "\x01\x00\x00\x00\x00", 5);
        write_file(dir, n++, "\x01\x01\x01\x88\x0e\x00\x08\xe8\x07\x08{o}kd", 15);
        static const char two_groups[] = "\x01\x05\x02\x88\x0e\x02\x01g\x04\x01h\x03"
                                         "\x08\xe8\x07\x08{o}k1\x08\xe8\x07\x08{o}k2";
        write_file(dir, n++, two_groups, sizeof(two_groups) - 1); /* 30 bytes */
        return 0;
    }
    if (!strcmp(kind, "fuzz_log")) {
        /* mode 1 (the harness fixes the CRCs), then records: seq, key "k<type>", a sample of
         * every type, each twice (a key of many records), and a feed of one-entry deltas */
        crdt_buf_t b = {0};
        crdt_buf_append(&b, "\x01", 1);
        uint64_t seq = 1;
        for (int round = 0; round < 2; round++) {
            for (int t = CRDT_TYPE_MIN; t <= CRDT_TYPE_MAX; t++) {
                crdt_obj_t *o = sample(t, round);
                if (!o)
                    continue;
                uint8_t head[16] = {0};
                size_t start = b.len;
                crdt_buf_append(&b, head, 8);
                uint8_t pre[4] = {(uint8_t)seq++, 2, 'k', (uint8_t)('0' + t)};
                crdt_buf_append(&b, pre, 4);
                crdt_obj_encode(o, &b);
                uint32_t len = (uint32_t)(b.len - start - 8);
                for (int i = 0; i < 4; i++)
                    b.data[start + i] = (uint8_t)(len >> (8 * i));
                crdt_obj_free(o);
            }
        }
        for (int i = 0; i < 8; i++) {
            crdt_obj_t *tl = crdt_timeline_new(0), *d = NULL;
            char m[8];
            int ml = snprintf(m, sizeof(m), "m%d", i % 5);
            crdt_timeline_add(tl, m, (size_t)ml, (double)i, &d);
            size_t start = b.len;
            uint8_t head[8] = {0};
            crdt_buf_append(&b, head, 8);
            uint8_t pre[6] = {(uint8_t)seq++, 4, 'f', 'e', 'e', 'd'};
            crdt_buf_append(&b, pre, 6);
            crdt_obj_encode(d ? d : tl, &b);
            uint32_t len = (uint32_t)(b.len - start - 8);
            for (int k = 0; k < 4; k++)
                b.data[start + k] = (uint8_t)(len >> (8 * k));
            crdt_obj_free(d);
            crdt_obj_free(tl);
        }
        write_file(dir, n++, b.data, b.len);
        crdt_buf_free(&b);
        return 0;
    }
    for (int t = CRDT_TYPE_MIN; t <= CRDT_TYPE_MAX; t++) {
        for (int v = 0; v < 2; v++) {
            crdt_obj_t *o = sample(t, v);
            if (!o)
                continue;
            crdt_buf_t b = {0};
            if (!strcmp(kind, "fuzz_json")) {
                json_t *j = crdt_obj_to_json(o);
                char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
                if (s)
                    write_file(dir, n++, s, strlen(s));
                free(s);
                json_decref(j);
            } else {
                /* mode byte 1: the harness appends the CRC, so store the frame without it */
                crdt_buf_append(&b, "\x01", 1);
                if (!strcmp(kind, "fuzz_op")) {
                    crdt_op_t op = {{3, 42}, o};
                    crdt_op_encode(&op, &b);
                } else {
                    crdt_obj_encode(o, &b);
                }
                write_file(dir, n++, b.data, b.len - 4);
            }
            crdt_buf_free(&b);
            crdt_obj_free(o);
        }
    }
    return 0;
}
