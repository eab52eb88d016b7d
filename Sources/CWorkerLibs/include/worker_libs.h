#ifndef WHISPER_WORKER_LIBS_H
#define WHISPER_WORKER_LIBS_H

/* libcurl, libsqlite3 and libpq, loaded with dlopen when the character worker (or
 * `whisperd migrate`) first needs them. The supervisor is the same binary and never does:
 * linked normally, these libraries and the ~40 they pull in (TLS, Kerberos, LDAP, …) would
 * cost it PSS for code it never runs (docs/worker.md, "Libraries"). Types and constants come from the
 * libraries' headers; every call goes through the wl_ wrappers below. */

#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>
#include <sqlite3.h>

/* Each library on its own, so a worker maps only its store's: libsqlite3 or libpq. */
enum {
    WL_LIBRARY_CURL = 1,
    WL_LIBRARY_SQLITE = 2,
    WL_LIBRARY_POSTGRES = 4,
};

/* Loads those of `which` (WL_LIBRARY_* ored) not loaded yet. 0, or -1 with a message naming
 * the library (and its Debian package) in `error`. */
int whisper_worker_libs_load(unsigned which, char *error, size_t size);

/* libcurl */
CURLcode wl_curl_global_init(long flags);
CURL *wl_curl_easy_init(void);
void wl_curl_easy_cleanup(CURL *handle);
void wl_curl_easy_reset(CURL *handle);
CURLcode wl_curl_easy_perform(CURL *handle);
const char *wl_curl_easy_strerror(CURLcode code);
struct curl_slist *wl_curl_slist_append(struct curl_slist *list, const char *text);
void wl_curl_slist_free_all(struct curl_slist *list);
/* curl_easy_setopt and curl_easy_getinfo are variadic: typed entry points for Swift. */
CURLcode wl_curl_set_long(CURL *handle, CURLoption option, long value);
CURLcode wl_curl_set_string(CURL *handle, CURLoption option, const char *value);
CURLcode wl_curl_set_pointer(CURL *handle, CURLoption option, void *value);
typedef size_t (*wl_curl_write_callback)(char *data, size_t size, size_t count, void *context);
CURLcode wl_curl_set_write_function(CURL *handle, CURLoption option, wl_curl_write_callback callback);
CURLcode wl_curl_get_long(CURL *handle, CURLINFO info, long *value);
/* The multi interface, driven by one thread (CurlMulti); only wakeup may be called from others. */
CURLM *wl_curl_multi_init(void);
CURLMcode wl_curl_multi_add_handle(CURLM *multi, CURL *handle);
CURLMcode wl_curl_multi_remove_handle(CURLM *multi, CURL *handle);
CURLMcode wl_curl_multi_perform(CURLM *multi, int *running);
CURLMcode wl_curl_multi_poll(CURLM *multi, int timeout_ms);
CURLMcode wl_curl_multi_wakeup(CURLM *multi);
CURLMcode wl_curl_multi_set_long(CURLM *multi, CURLMoption option, long value);
/* The next finished transfer: 1 with its handle and result, or 0 when none is left. */
int wl_curl_multi_next_done(CURLM *multi, CURL **handle, CURLcode *result);

/* libsqlite3 */
int wl_sqlite3_open_v2(const char *path, sqlite3 **db, int flags, const char *vfs);
int wl_sqlite3_close_v2(sqlite3 *db);
int wl_sqlite3_busy_timeout(sqlite3 *db, int milliseconds);
const char *wl_sqlite3_errmsg(sqlite3 *db);
int wl_sqlite3_prepare_v3(sqlite3 *db, const char *sql, int length, unsigned int flags, sqlite3_stmt **statement, const char **tail);
int wl_sqlite3_finalize(sqlite3_stmt *statement);
int wl_sqlite3_reset(sqlite3_stmt *statement);
int wl_sqlite3_clear_bindings(sqlite3_stmt *statement);
/* sqlite3_bind_text with SQLITE_TRANSIENT (a macro casting -1 to a function pointer: Swift cannot). */
int wl_sqlite3_bind_text_transient(sqlite3_stmt *statement, int index, const char *text, int length);
int wl_sqlite3_bind_int64(sqlite3_stmt *statement, int index, sqlite3_int64 value);
int wl_sqlite3_bind_double(sqlite3_stmt *statement, int index, double value);
int wl_sqlite3_step(sqlite3_stmt *statement);
sqlite3_int64 wl_sqlite3_column_int64(sqlite3_stmt *statement, int column);
int wl_sqlite3_column_int(sqlite3_stmt *statement, int column);
double wl_sqlite3_column_double(sqlite3_stmt *statement, int column);
const unsigned char *wl_sqlite3_column_text(sqlite3_stmt *statement, int column);
sqlite3_int64 wl_sqlite3_last_insert_rowid(sqlite3 *db);
int wl_sqlite3_changes(sqlite3 *db);

/* libpq (declared here: its header is outside the default include path) */
typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;
static const int WL_CONNECTION_OK = 0;   /* ConnStatusType */
static const int WL_PGRES_COMMAND_OK = 1; /* ExecStatusType */
static const int WL_PGRES_TUPLES_OK = 2;
static const int WL_PGRES_PIPELINE_SYNC = 10;
static const int WL_PGRES_PIPELINE_ABORTED = 11;
static const int WL_PQTRANS_IDLE = 0;     /* PGTransactionStatusType */
PGconn *wl_PQconnectdb(const char *conninfo);
int wl_PQstatus(const PGconn *connection);
char *wl_PQerrorMessage(const PGconn *connection);
void wl_PQfinish(PGconn *connection);
int wl_PQtransactionStatus(const PGconn *connection);
PGresult *wl_PQexecParams(PGconn *connection, const char *command, int count, const unsigned int *types,
                          const char *const *values, const int *lengths, const int *formats, int resultFormat);
PGresult *wl_PQprepare(PGconn *connection, const char *name, const char *command, int count, const unsigned int *types);
PGresult *wl_PQexecPrepared(PGconn *connection, const char *name, int count, const char *const *values, const int *lengths,
                            const int *formats, int resultFormat);
int wl_PQresultStatus(const PGresult *result);
char *wl_PQresultErrorMessage(const PGresult *result);
int wl_PQntuples(const PGresult *result);
int wl_PQnfields(const PGresult *result);
char *wl_PQgetvalue(const PGresult *result, int row, int field);
char *wl_PQcmdTuples(PGresult *result);
void wl_PQclear(PGresult *result);
/* Pipeline mode (libpq >= 14): a batch's statements sent at once, results read after. Text
 * parameters, text results. */
int wl_PQenterPipelineMode(PGconn *connection);
int wl_PQexitPipelineMode(PGconn *connection);
int wl_PQpipelineSync(PGconn *connection);
int wl_PQsendQueryParams(PGconn *connection, const char *command, int count, const char *const *values);
int wl_PQsendQueryPrepared(PGconn *connection, const char *name, int count, const char *const *values);
PGresult *wl_PQgetResult(PGconn *connection);

#endif
