/* The compiled fast path of the Hyperplane dataplane (built by fastbuild.py with cffi).
 *
 * A cache of decisions the Python pipeline made: one "flow" per direction of a session
 * (key: the link's interface index, protocol, source and destination address, ports or
 * echo identifier), holding the rewrite (new address and port, checksum deltas), the
 * MACs and the transmit socket.  hp_run walks the receive ring (TPACKET_V2) and, for a
 * frame that hits a flow and needs no state change (an ACK-only TCP segment, UDP, an
 * echo or echo reply), rewrites it in place, sends it and counts it in the flow; at the
 * first frame it cannot finish it stops and hands that frame to Python (the slot stays
 * the frame's until the next call).  Python harvests the counts into its sessions
 * (fastpath.py); the session table is never written here.  A flow is used only while
 * its session's record is live with the sequence number it had when the flow was made
 * (any write of the record changes it) and while its expiry lies ahead.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#define VNET 10
#define IPO (VNET + 14)
#define TP_USER 1u
#define TP_COPY 2u
#define FAST_MASK 0x17 /* FIN SYN RST ACK */
#define ACK 0x10

struct hp_flow {
    uint32_t ifindex, ports;
    uint8_t proto, dir, in_use, dirty;
    uint8_t addrs[8], eth[12], new_addr[4], new_port[2];
    uint16_t d_ip, d_full, d_part, mtu, seq;
    int32_t fd;
    uint32_t rec_off, ack, next_dirty;
    int32_t pair;             /* the session's other direction's flow, or -1 */
    uint16_t win;
    uint8_t acked;
    double expires, timeout;
    uint64_t pkts, bytes;
};

struct hp_ctx {
    struct hp_flow *flows;
    uint32_t *index;          /* open addressing: flow number + 1, 0 empty */
    uint32_t nflows, mask;    /* flows' capacity; index size - 1 */
    uint32_t dirty_head;      /* first dirty flow + 1, 0 none */
    uint8_t *table;           /* the session table's memory */
    uint8_t *ring;
    uint32_t frames, frame_size, head, pending;
    int sock;
    /* what the last hp_run stopped at, for Python */
    uint32_t p_off, p_len, p_ifindex, p_status, p_copied, p_fast;
    int32_t p_flow;
    uint64_t tx_full, tx_error, rx_error, rx_truncated;
};

static uint32_t hash_key(uint32_t ifindex, uint8_t proto, const uint8_t *addrs, uint32_t ports) {
    uint32_t a, b;
    memcpy(&a, addrs, 4);
    memcpy(&b, addrs + 4, 4);
    uint64_t h = (uint64_t)ifindex * 0x9E3779B97F4A7C15ull;
    h ^= ((uint64_t)a << 32 | b) * 0xC2B2AE3D27D4EB4Full;
    h ^= ((uint64_t)ports << 8 | proto) * 0x165667B19E3779F9ull;
    return (uint32_t)(h ^ (h >> 29) ^ (h >> 47));
}

static int same(const struct hp_flow *f, uint32_t ifindex, uint8_t proto, const uint8_t *addrs,
                uint32_t ports) {
    return f->ifindex == ifindex && f->proto == proto && f->ports == ports &&
           memcmp(f->addrs, addrs, 8) == 0;
}

int hp_lookup(struct hp_ctx *c, uint32_t ifindex, uint8_t proto, const uint8_t *addrs,
              uint32_t ports) {
    uint32_t i = hash_key(ifindex, proto, addrs, ports) & c->mask;
    while (c->index[i]) {
        struct hp_flow *f = &c->flows[c->index[i] - 1];
        if (same(f, ifindex, proto, addrs, ports))
            return (int)(c->index[i] - 1);
        i = (i + 1) & c->mask;
    }
    return -1;
}

/* flow n (filled in by Python, in_use 0) into the index; -1 if its key is there already */
int hp_insert(struct hp_ctx *c, uint32_t n) {
    struct hp_flow *f = &c->flows[n];
    if (hp_lookup(c, f->ifindex, f->proto, f->addrs, f->ports) >= 0)
        return -1;
    uint32_t i = hash_key(f->ifindex, f->proto, f->addrs, f->ports) & c->mask;
    while (c->index[i])
        i = (i + 1) & c->mask;
    c->index[i] = n + 1;
    f->in_use = 1;
    return 0;
}

/* flow n out of the index (backward-shift deletion: no tombstones) */
void hp_remove(struct hp_ctx *c, uint32_t n) {
    struct hp_flow *f = &c->flows[n];
    uint32_t i = hash_key(f->ifindex, f->proto, f->addrs, f->ports) & c->mask;
    while (c->index[i] != n + 1) {
        if (!c->index[i])
            return;
        i = (i + 1) & c->mask;
    }
    uint32_t j = i;
    for (;;) {
        c->index[i] = 0;
        for (;;) {
            j = (j + 1) & c->mask;
            if (!c->index[j])
                goto done;
            struct hp_flow *g = &c->flows[c->index[j] - 1];
            uint32_t home = hash_key(g->ifindex, g->proto, g->addrs, g->ports) & c->mask;
            /* can the entry at j move back to i? (its home is not in (i, j]) */
            if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                break;
        }
        c->index[i] = c->index[j];
        i = j;
    }
done:
    f->in_use = 0;
}

static uint32_t fold(uint32_t c) {
    c = (c & 0xFFFF) + (c >> 16);
    return (c & 0xFFFF) + (c >> 16);
}

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

/* the frame at d (len bytes from the virtio header) through flow f, or 0: Python's
 * (*hit: the flow its key found or -1; c->p_fast: 1 when a flow could carry a frame
 * of its kind, an ACK-only TCP segment, UDP or an echo (reply), else 0) */
static int forward(struct hp_ctx *c, uint8_t *d, uint32_t len, uint32_t ifindex, double now,
                   int32_t *hit) {
    *hit = -1;
    c->p_fast = 0;
    if (len < IPO + 20 || d[VNET + 12] != 0x08 || d[VNET + 13] != 0x00)
        return 0;
    uint8_t *ip = d + IPO;
    uint32_t ihl = (uint32_t)(ip[0] & 0x0F) << 2;
    uint32_t end = IPO + ((uint32_t)ip[2] << 8 | ip[3]);
    if (ip[0] >> 4 != 4 || ihl < 20 || end < IPO + ihl || end > len)
        return 0;
    if ((ip[6] & 0x3F) || ip[7]) /* a fragment (MF or an offset) */
        return 0;
    uint8_t proto = ip[9];
    uint32_t l4 = IPO + ihl, ports;
    if (l4 + (proto == 6 ? 20u : 8u) > end)
        return 0;
    if (proto == 6 || proto == 17) {
        memcpy(&ports, d + l4, 4);
    } else if (proto == 1 && (d[l4] == 8 || d[l4] == 0)) {
        ports = 0;
        memcpy(&ports, d + l4 + 4, 2);
    } else {
        return 0;
    }
    c->p_fast = proto != 6 || (d[l4 + 13] & FAST_MASK) == ACK;
    int n = hp_lookup(c, ifindex, proto, ip + 12, ports);
    *hit = n;
    if (n < 0)
        return 0;
    struct hp_flow *f = &c->flows[n];
    if (proto == 1 && d[l4] != (f->dir ? 0 : 8))
        return 0;
    if (ip[8] <= 1 || f->expires < now)
        return 0;
    const uint8_t *rec = c->table + f->rec_off;
    uint16_t seq;
    memcpy(&seq, rec, 2);
    if (seq != f->seq || rec[2] != 1)
        return 0;
    if (!f->dir && end - IPO > f->mtu && !d[1])
        return 0;
    if (proto == 6) {
        if ((d[l4 + 13] & FAST_MASK) != ACK)
            return 0;
        const uint8_t *a = d + l4 + 8;
        f->ack = (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
        f->win = (uint16_t)(d[l4 + 14] << 8 | d[l4 + 15]);
        f->acked = 1;
    }
    f->expires = now + f->timeout;
    if (f->pair >= 0) /* one expiry per session, refreshed by either direction */
        c->flows[f->pair].expires = f->expires;
    /* the rewrite, as rewrite.translate */
    uint32_t at;
    if (!f->dir) {
        memcpy(ip + 12, f->new_addr, 4);
        at = l4 + (proto == 1 ? 4 : 0);
    } else {
        memcpy(ip + 16, f->new_addr, 4);
        at = l4 + (proto == 1 ? 4 : 2);
    }
    memcpy(d + at, f->new_port, 2);
    ip[8] -= 1;
    uint32_t s = (((uint32_t)ip[10] << 8 | ip[11]) ^ 0xFFFF) + f->d_ip;
    put16(ip + 10, fold(s) ^ 0xFFFF);
    at = l4 + (proto == 6 ? 16 : proto == 17 ? 6 : 2);
    s = (uint32_t)d[at] << 8 | d[at + 1];
    if (d[0] & 1) { /* NEEDS_CSUM: the pseudo-header sum, uncomplemented */
        put16(d + at, fold(s + f->d_part));
    } else if (!(proto == 17 && s == 0)) {
        s = fold((s ^ 0xFFFF) + f->d_full) ^ 0xFFFF;
        if (s == 0 && proto == 17)
            s = 0xFFFF;
        put16(d + at, s);
    }
    memcpy(d + VNET, f->eth, 12);
    f->pkts += 1;
    f->bytes += len - VNET;
    if (!f->dirty) {
        f->dirty = 1;
        f->next_dirty = c->dirty_head;
        c->dirty_head = (uint32_t)n + 1;
    }
    if (send(f->fd, d, len, MSG_DONTWAIT) < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            c->tx_full += 1;
        else
            c->tx_error += 1;
    }
    return 1;
}

/* Walk up to budget slots.  Returns 1 when it stopped at a frame for Python (p_*: the
 * slot's offset, the frame's length, its link, whether it was copied into buf, the flow
 * it hit or -1), 0 when the ring is empty or the budget spent.  *done: slots read. */
int hp_run(struct hp_ctx *c, int budget, double now, uint8_t *buf, uint32_t buf_len,
           int *done) {
    *done = 0;
    if (c->pending) { /* the frame Python took last time: its slot back to the kernel */
        memset(c->ring + (size_t)c->head * c->frame_size, 0, 4);
        c->head = c->head + 1 < c->frames ? c->head + 1 : 0;
        c->pending = 0;
    }
    while (*done < budget) {
        uint8_t *slot = c->ring + (size_t)c->head * c->frame_size;
        uint32_t status, tp_len, snaplen;
        uint16_t mac;
        int32_t ifindex;
        memcpy(&status, slot, 4);
        if (!(status & TP_USER))
            return 0;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        memcpy(&tp_len, slot + 4, 4);
        memcpy(&snaplen, slot + 8, 4);
        memcpy(&mac, slot + 12, 2);
        memcpy(&ifindex, slot + 36, 4);
        *done += 1;
        uint8_t *d = 0;
        uint32_t len = 0;
        c->p_copied = 0;
        c->p_fast = 0;
        if (status & TP_COPY) {
            ssize_t got = recv(c->sock, buf, buf_len, MSG_DONTWAIT);
            if (got < 0) {
                c->rx_error += 1;
            } else {
                d = buf;
                len = (uint32_t)got;
                c->p_copied = 1;
            }
        } else if (snaplen < tp_len) {
            c->rx_truncated += 1;
        } else {
            d = slot + mac - VNET;
            len = snaplen + VNET;
        }
        int32_t hit = -1;
        if (d && !forward(c, d, len, (uint32_t)ifindex, now, &hit)) {
            c->p_off = (uint32_t)(d - c->ring);
            c->p_len = len;
            c->p_ifindex = (uint32_t)ifindex;
            c->p_status = status;
            c->p_flow = hit;
            c->pending = 1;
            return 1;
        }
        __atomic_thread_fence(__ATOMIC_RELEASE);
        memset(slot, 0, 4);
        c->head = c->head + 1 < c->frames ? c->head + 1 : 0;
    }
    return 0;
}

/* The dirty flows' numbers into out (at most max); their dirty marks cleared. */
int hp_harvest(struct hp_ctx *c, uint32_t *out, int max) {
    int n = 0;
    while (c->dirty_head && n < max) {
        struct hp_flow *f = &c->flows[c->dirty_head - 1];
        out[n++] = c->dirty_head - 1;
        c->dirty_head = f->next_dirty;
        f->dirty = 0;
    }
    return n;
}

/* ---- The attach scan (rebuild._rebuild's loop, the pure-Python reference) ----------
 * Every record below the high water mark is judged as rebuild.py states: not live, free;
 * a bad CRC of the immutable part, key blocks that disagree or an unbound slot or an
 * unknown protocol, dropped (live cleared); an odd seq, kept and reported for Python
 * to mend; a TCP record's stale ACK fields cleared.  A kept record's two keys go into the
 * index (KeyIndex: word tag << 32 | ref + 1 at the tag's home place or the next free
 * one), with the very hash Python's index uses: hash((slot, proto, addrs, ports)), a
 * tuple of two small ints, 8 bytes and an int (CPython's tuplehash over the items'
 * hashes; a small non-negative int hashes to itself; bytes through _Py_HashBytes).
 * The used map gets 1 for a kept record and 0 for any other.  Nothing is allocated. */
typedef intptr_t hp_hash_t;
extern hp_hash_t _Py_HashBytes(const void *src, intptr_t len);

#define XXPRIME_1 11400714785074694791ULL
#define XXPRIME_2 14029467366897019727ULL
#define XXPRIME_5 2870177450012600261ULL
#define XXROTATE(x) (((x) << 31) | ((x) >> 33))
#define REC_SIZE 128
#define OUT_KEY 80
#define IN_KEY 96
#define IMM_LEN 44
#define CRC_AT 124
#define TAG 0x7FFFFFFFULL

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {   /* zlib.crc32 */
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static inline uint64_t lane(uint64_t acc, uint64_t item) {
    acc += item * XXPRIME_2;
    acc = XXROTATE(acc);
    return acc * XXPRIME_1;
}

/* hash((slot, proto, addrs, ports)) as CPython computes it. */
uint64_t hp_key_hash(uint32_t slot, uint32_t proto, const uint8_t *addrs, uint32_t ports) {
    uint64_t acc = XXPRIME_5;
    acc = lane(acc, slot);
    acc = lane(acc, proto);
    acc = lane(acc, (uint64_t)_Py_HashBytes(addrs, 8));
    acc = lane(acc, ports);
    acc += 4 ^ (XXPRIME_5 ^ 3527539ULL);
    if (acc == (uint64_t)-1)
        return 1546275796;
    return acc;
}

static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static inline void index_put(int64_t *slots, uint64_t mask, uint64_t hash, uint64_t ref) {
    uint64_t tag = hash & TAG, i = tag & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = (int64_t)((tag << 32) | ref);
}

/* Returns the number of records kept; torn (odd seq) record numbers go to torn[], their
   number to *ntorn; dropped ones are counted in *dropped. */
int64_t hp_attach_scan(uint8_t *body, uint32_t hwm, const uint8_t *bound, uint32_t nbound,
                       const uint8_t *protocols, const uint8_t *stale, uint32_t inbound,
                       uint32_t tcp, int64_t *slots, uint64_t mask, uint8_t *used,
                       uint32_t *torn, uint32_t *ntorn, uint32_t *dropped) {
    if (!crc_table[1])
        crc_init();
    int64_t kept = 0;
    for (uint32_t rec = 0; rec < hwm; rec++) {
        uint8_t *r = body + (size_t)rec * REC_SIZE;
        used[rec] = 0;
        if (r[2] != 1)
            continue;
        const uint8_t *out = r + OUT_KEY, *in = r + IN_KEY;
        uint32_t slot = rd16(out), proto = out[2];
        if (crc32_of(r + OUT_KEY, IMM_LEN) != rd32(r + CRC_AT) || slot != rd16(in)
                || slot >= nbound || !bound[slot] || proto != in[2] || out[3] || in[3] != 1
                || !protocols[proto]) {
            r[2] = 0;
            (*dropped)++;
            continue;
        }
        if (rd16(r) & 1)
            torn[(*ntorn)++] = rec;
        else if (proto == tcp && (r[5] & stale[r[4]]))
            r[5] &= (uint8_t)~stale[r[4]];
        index_put(slots, mask, hp_key_hash(slot, proto, out + 4, rd32(out + 12)),
                  ((uint64_t)rec << 1) + 1);
        index_put(slots, mask, hp_key_hash(slot, proto | inbound, in + 4, rd32(in + 12)),
                  ((uint64_t)rec << 1) + 2);
        used[rec] = 1;
        kept++;
    }
    return kept;
}

/* ---- The attach's port claims (PortAllocator.claim_keys into fresh allocators) -----
 * Each kept record (used[rec]) claims its ENI port in its allocator (alloc_of[slot * 3 +
 * proto_index[proto]]): the port's owner is its inside endpoint (address << 16 | inside
 * port), one more reference if it is already; refused (rejected[]) when the port serves
 * another endpoint or the endpoint already owns another port (seen: a zeroed table of
 * seen_mask + 1 words, (allocator + 1) << 48 | endpoint).  An endpoint that owns a port
 * other than its own is reported in moved[] (endpoint << 16 | port) with its allocator. */
#define GOLDEN 0x9E3779B97F4A7C15ULL

static int seen_add(uint64_t *seen, uint64_t mask, uint64_t key) {  /* 0: was there */
    uint64_t i = ((key * GOLDEN) >> 20) & mask;
    while (seen[i]) {
        if (seen[i] == key)
            return 0;
        i = (i + 1) & mask;
    }
    seen[i] = key;
    return 1;
}

static int seen_has(const uint64_t *seen, uint64_t mask, uint64_t key) {
    uint64_t i = ((key * GOLDEN) >> 20) & mask;
    while (seen[i]) {
        if (seen[i] == key)
            return 1;
        i = (i + 1) & mask;
    }
    return 0;
}

void hp_attach_claim(const uint8_t *body, const uint8_t *used, uint32_t hwm,
                     const int32_t *alloc_of, const uint8_t *proto_index, uint32_t icmp,
                     uint64_t **owners, uint32_t **refs, uint32_t *records, uint32_t *owned,
                     uint32_t *rejected, uint32_t *nrejected, uint64_t *moved,
                     uint32_t *moved_alloc, uint32_t *nmoved, uint64_t *seen,
                     uint64_t seen_mask) {
    for (uint32_t rec = 0; rec < hwm; rec++) {
        if (!used[rec])
            continue;
        const uint8_t *out = body + (size_t)rec * REC_SIZE + OUT_KEY;
        const uint8_t *in = out + (IN_KEY - OUT_KEY);
        uint32_t proto = out[2];
        int32_t a = alloc_of[rd16(out) * 3 + proto_index[proto]];
        records[a]++;
        uint32_t inside_port = rd32(out + 12) >> 16, ports_in = rd32(in + 12);
        uint32_t port = proto == icmp ? ports_in >> 16 : ports_in & 0xFFFF;
        uint64_t ip = ((uint64_t)out[4] << 24) | ((uint64_t)out[5] << 16)
                      | ((uint64_t)out[6] << 8) | out[7];
        uint64_t endpoint = (ip << 16) | inside_port;
        uint64_t key = ((uint64_t)(a + 1) << 48) | endpoint, owner = owners[a][port];
        if (owner == endpoint) {
            refs[a][port]++;
            continue;
        }
        if (owner || seen_has(seen, seen_mask, key)) {
            rejected[(*nrejected)++] = rec;
            continue;
        }
        owners[a][port] = endpoint;
        refs[a][port] = 1;
        seen_add(seen, seen_mask, key);
        owned[a]++;
        if (port != inside_port) {
            moved[*nmoved] = (endpoint << 16) | port;
            moved_alloc[(*nmoved)++] = (uint32_t)a;
        }
    }
}
