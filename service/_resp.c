/* The tick stream's replies, straight from Redis's bytes to columns.
 *
 * hiredis turns a 1,000-entry XREAD reply into ~11,000 Python objects (a tuple, an ID, a
 * list and eight field strings per entry) that the loop then takes apart again column by
 * column. Here one pass over the reply gives, per entry, its ID, its raw ticker and its
 * numbers, plus where the entry starts, so that the rare entry the columns cannot vouch for
 * is rebuilt on demand (`entry_at`) exactly as hiredis would have built it.
 *
 * Vouching is exact: a number is taken only if it is made of the characters of a plain
 * decimal and PyOS_string_to_double, the function behind float(), consumes it whole; else
 * it is NaN and the entry goes to the slow path (service/entries.py), which decides.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_LENGTH (1LL << 40) /* of a string or aggregate: beyond it, not a Redis reply */
#define MAX_NUMBER_CHARS 64 /* the longest number parsed here; callers may ask for fewer */

/* flags of an entry, one byte each */
#define FAST 1       /* known fields only, each once, with ticker and price */
#define HAS_VOLUME 2 /* a volume field */
#define HAS_TS 4     /* a ts field */

typedef struct {
    const char *p, *end;
} Cursor;

static int fail(const char *what) {
    PyErr_Format(PyExc_ValueError, "unexpected reply from Redis: %s", what);
    return -1;
}

/* The header line at the cursor: its type byte and integer; 0 on success, 1 if the
 * buffer ends first, -1 (error set) on a malformed line. */
static int header(Cursor *c, char *type, long long *value) {
    const char *p = c->p;
    if (p >= c->end) return 1;
    const char *cr = memchr(p, '\r', c->end - p);
    if (cr == NULL || cr + 1 >= c->end) return 1;
    if (cr[1] != '\n') return fail("a line not ended by CRLF");
    *type = p[0];
    *value = 0;
    const char *q = p + 1;
    int negative = 0;
    if (strchr("$*%~>|!=", *type) != NULL) {
        if (q < cr && *q == '-') {
            negative = 1;
            q++;
        }
        if (q == cr) return fail("a length without digits");
        for (; q < cr; q++) {
            if (*q < '0' || *q > '9' || *value > (LLONG_MAX - 9) / 10)
                return fail("a bad length");
            *value = *value * 10 + (*q - '0');
        }
        if (negative) *value = -*value;
    }
    c->p = cr + 2;
    return 0;
}

/* Skip one bulk string's body of `len` bytes and its CRLF; 1 if the buffer ends first. */
static int body(Cursor *c, long long len, const char **data) {
    if (c->end - c->p - 2 < len) return 1;
    *data = c->p;
    if (c->p[len] != '\r' || c->p[len + 1] != '\n') return fail("a bulk string too long");
    c->p += len + 2;
    return 0;
}

/* reply_end(buffer, start) -> the end of the one complete reply at `start`, or -1 if the
 * buffer does not hold all of it yet. RESP2 and RESP3. */
static PyObject *reply_end(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &start)) return NULL;
    Cursor c = {(const char *)buf.buf + start, (const char *)buf.buf + buf.len};
    long long pending = 1;
    int r = 0;
    while (pending > 0) {
        char type;
        long long n;
        const char *data;
        r = header(&c, &type, &n);
        if (r) break;
        if (n > MAX_LENGTH) {
            r = fail("a length no Redis sends");
            break;
        }
        switch (type) {
        case '+': case '-': case ':': case '_': case ',': case '#': case '(':
            pending--;
            break;
        case '$': case '!': case '=':
            pending--;
            if (n >= 0) r = body(&c, n, &data);
            break;
        case '*': case '~': case '>':
            pending += (n > 0 ? n : 0) - 1;
            break;
        case '%':
            pending += (n > 0 ? 2 * n : 0) - 1;
            break;
        case '|': /* attributes: a map that comes before the reply it is about */
            pending += (n > 0 ? 2 * n : 0);
            break;
        default:
            r = fail("an unknown type byte");
        }
        if (r) break;
    }
    Py_ssize_t end = c.p - (const char *)buf.buf;
    PyBuffer_Release(&buf);
    if (r < 0) return NULL;
    return PyLong_FromSsize_t(r ? -1 : end);
}

/* A bulk string (or, where `nil_ok`, a null); NULL data for a null. 0 / -1 (error). */
static int bulk(Cursor *c, const char **data, long long *len, int nil_ok) {
    char type;
    int r = header(c, &type, len);
    if (r) return r > 0 ? fail("a truncated reply") : -1;
    if ((type == '$' && *len < 0) || type == '_') {
        if (!nil_ok) return fail("a null where a string belongs");
        *data = NULL;
        return 0;
    }
    if (type != '$') return fail("not a string where a string belongs");
    r = body(c, *len, data);
    return r > 0 ? fail("a truncated reply") : r;
}

/* An aggregate header of `type`; -1 count for a null. 0 / -1 (error). */
static int aggregate(Cursor *c, char want, long long *count) {
    char type;
    int r = header(c, &type, count);
    if (r) return r > 0 ? fail("a truncated reply") : -1;
    if (type == '_' || ((type == '*' || type == '%') && *count < 0)) {
        *count = -1;
        return 0;
    }
    if (type != want) return fail("another type where an array belongs");
    return 0;
}

/* float() of a plain decimal, NaN for anything else. */
static double number(const char *s, long long len, long long max_chars) {
    char text[MAX_NUMBER_CHARS + 1];
    if (len == 0 || len > max_chars || len > MAX_NUMBER_CHARS) return NAN;
    for (long long i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '+' || ch == 'e' ||
              ch == 'E'))
            return NAN;
    }
    memcpy(text, s, len);
    text[len] = '\0';
    char *stop;
    double value = PyOS_string_to_double(text, &stop, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return NAN;
    }
    return stop == text + len ? value : NAN;
}

/* The milliseconds part of a stream ID; -1 if it has none that fits an int64. */
static int64_t id_ms(const char *id, long long len) {
    int64_t ms = 0;
    long long i = 0;
    for (; i < len && id[i] != '-'; i++) {
        if (id[i] < '0' || id[i] > '9' || ms > (INT64_MAX - 9) / 10) return -1;
        ms = ms * 10 + (id[i] - '0');
    }
    return i == 0 ? -1 : ms;
}

static const char *const FIELD_NAMES[] = {"ticker", "price", "volume", "ts"};
enum { TICKER, PRICE, VOLUME, TS, N_FIELDS };

static int field_index(const char *name, long long len) {
    for (int k = 0; k < N_FIELDS; k++)
        if ((size_t)len == strlen(FIELD_NAMES[k]) && memcmp(name, FIELD_NAMES[k], len) == 0)
            return k;
    return -1;
}

/* columns(reply, xread, max_chars) -> (ids, offsets, flags, tickers, price, volume, ts, id_ms)
 *
 * `reply`: one complete XREAD (one stream, `xread` true) or XRANGE reply. Per entry: its ID
 * (bytes), the offset of the entry in `reply` (for entry_at), its flags, its raw ticker
 * (bytes; None unless FAST) and, as the bytes of float64 / int64 arrays, price, volume,
 * ts (NaN where not a plain decimal of at most `max_chars`, or absent; volume 0 when
 * absent) and the ID's
 * milliseconds (-1 if it has none).
 */
static PyObject *columns(PyObject *self, PyObject *args) {
    Py_buffer buf;
    int xread;
    long long max_chars;
    if (!PyArg_ParseTuple(args, "y*pL", &buf, &xread, &max_chars)) return NULL;
    Cursor c = {(const char *)buf.buf, (const char *)buf.buf + buf.len};
    PyObject *ids = NULL, *tickers = NULL, *offsets = NULL, *flags = NULL, *price = NULL,
             *volume = NULL, *ts = NULL, *ms = NULL, *result = NULL;
    long long n, count;
    const char *data;
    long long len;
    if (xread) { /* RESP2: *1 *2 $name *n; RESP3: %1 $name *n; nothing: a null */
        char type;
        int r = header(&c, &type, &count);
        if (r) {
            if (r > 0) fail("a truncated reply");
            goto done;
        }
        if (type == '_' || count < 0) {
            n = 0;
            goto empty;
        }
        if (count != 1 || (type != '*' && type != '%')) {
            fail("an XREAD reply of other than one stream");
            goto done;
        }
        if (type == '*' && (aggregate(&c, '*', &count) < 0 || count != 2)) {
            if (!PyErr_Occurred()) fail("a stream not given as [name, entries]");
            goto done;
        }
        if (bulk(&c, &data, &len, 0) < 0) goto done;
    }
    if (aggregate(&c, '*', &n) < 0) goto done;
    if (n < 0) n = 0;
    if (n > (long long)buf.len) {
        fail("more entries than the reply has bytes");
        goto done;
    }
empty:
    ids = PyList_New(n);
    tickers = PyList_New(n);
    offsets = PyBytes_FromStringAndSize(NULL, n * sizeof(int64_t));
    flags = PyBytes_FromStringAndSize(NULL, n);
    price = PyBytes_FromStringAndSize(NULL, n * sizeof(double));
    volume = PyBytes_FromStringAndSize(NULL, n * sizeof(double));
    ts = PyBytes_FromStringAndSize(NULL, n * sizeof(double));
    ms = PyBytes_FromStringAndSize(NULL, n * sizeof(int64_t));
    if (!ids || !tickers || !offsets || !flags || !price || !volume || !ts || !ms) goto done;
    int64_t *off_a = (int64_t *)PyBytes_AS_STRING(offsets), *ms_a = (int64_t *)PyBytes_AS_STRING(ms);
    char *flag_a = PyBytes_AS_STRING(flags);
    double *price_a = (double *)PyBytes_AS_STRING(price);
    double *volume_a = (double *)PyBytes_AS_STRING(volume), *ts_a = (double *)PyBytes_AS_STRING(ts);
    for (long long i = 0; i < n; i++) {
        off_a[i] = c.p - (const char *)buf.buf;
        if (aggregate(&c, '*', &count) < 0) goto done;
        if (count != 2) {
            fail("a stream entry not given as [id, fields]");
            goto done;
        }
        if (bulk(&c, &data, &len, 0) < 0) goto done;
        PyObject *id = PyBytes_FromStringAndSize(data, len);
        if (id == NULL) goto done;
        PyList_SET_ITEM(ids, i, id);
        ms_a[i] = id_ms(data, len);
        long long pairs;
        if (aggregate(&c, '*', &pairs) < 0) goto done;
        const char *value[N_FIELDS] = {NULL, NULL, NULL, NULL};
        long long value_len[N_FIELDS] = {0, 0, 0, 0};
        int fast = pairs > 0 && pairs % 2 == 0;
        for (long long j = 0; j < (pairs > 0 ? pairs / 2 : 0); j++) {
            const char *name, *v;
            long long name_len, v_len;
            if (bulk(&c, &name, &name_len, 0) < 0 || bulk(&c, &v, &v_len, 0) < 0) goto done;
            int k = field_index(name, name_len);
            if (k < 0 || value[k] != NULL) {
                fast = 0;
                continue;
            }
            value[k] = v;
            value_len[k] = v_len;
        }
        if (pairs > 0 && pairs % 2 == 1) { /* a field without a value: hiredis keeps it */
            const char *v;
            if (bulk(&c, &v, &len, 0) < 0) goto done;
        }
        fast = fast && value[TICKER] != NULL && value[PRICE] != NULL && ms_a[i] >= 0;
        flag_a[i] = (char)(fast ? FAST | (value[VOLUME] ? HAS_VOLUME : 0) |
                                      (value[TS] ? HAS_TS : 0)
                                : 0);
        PyObject *ticker = fast ? PyBytes_FromStringAndSize(value[TICKER], value_len[TICKER])
                                : Py_NewRef(Py_None);
        if (ticker == NULL) goto done;
        PyList_SET_ITEM(tickers, i, ticker);
        price_a[i] = fast ? number(value[PRICE], value_len[PRICE], max_chars) : NAN;
        volume_a[i] = !fast ? NAN : value[VOLUME] ? number(value[VOLUME], value_len[VOLUME], max_chars) : 0.0;
        ts_a[i] = fast && value[TS] ? number(value[TS], value_len[TS], max_chars) : NAN;
    }
    if (c.p != c.end) {
        fail("bytes after the reply");
        goto done;
    }
    result = PyTuple_Pack(8, ids, offsets, flags, tickers, price, volume, ts, ms);
done:
    Py_XDECREF(ids);
    Py_XDECREF(offsets);
    Py_XDECREF(flags);
    Py_XDECREF(tickers);
    Py_XDECREF(price);
    Py_XDECREF(volume);
    Py_XDECREF(ts);
    Py_XDECREF(ms);
    PyBuffer_Release(&buf);
    return result;
}

/* entry_at(reply, offset) -> (id, [field, value, ...] or None): the entry as hiredis gives
 * it, for the entries the columns do not vouch for. */
static PyObject *entry_at(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &offset)) return NULL;
    PyObject *result = NULL, *id = NULL, *fields = NULL;
    Cursor c = {(const char *)buf.buf + offset, (const char *)buf.buf + buf.len};
    long long count, len;
    const char *data;
    if (offset < 0 || offset > buf.len) {
        fail("an offset outside the reply");
        goto done;
    }
    if (aggregate(&c, '*', &count) < 0) goto done;
    if (count != 2) {
        fail("a stream entry not given as [id, fields]");
        goto done;
    }
    if (bulk(&c, &data, &len, 0) < 0) goto done;
    id = PyBytes_FromStringAndSize(data, len);
    if (id == NULL || aggregate(&c, '*', &count) < 0) goto done;
    if (count < 0) {
        fields = Py_NewRef(Py_None);
    } else {
        fields = PyList_New(count);
        if (fields == NULL) goto done;
        for (long long j = 0; j < count; j++) {
            if (bulk(&c, &data, &len, 0) < 0) goto done;
            PyObject *part = PyBytes_FromStringAndSize(data, len);
            if (part == NULL) goto done;
            PyList_SET_ITEM(fields, j, part);
        }
    }
    result = PyTuple_Pack(2, id, fields);
done:
    Py_XDECREF(id);
    Py_XDECREF(fields);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"reply_end", reply_end, METH_VARARGS,
     "reply_end(buffer, start) -> end of the complete reply at start, or -1"},
    {"columns", columns, METH_VARARGS,
     "columns(reply, xread, max_chars) -> (ids, offsets, flags, tickers, price, volume, ts, id_ms)"},
    {"entry_at", entry_at, METH_VARARGS, "entry_at(reply, offset) -> (id, fields or None)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_resp",
                                    "Stream replies from Redis's bytes to columns.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__resp(void) { return PyModule_Create(&module); }
