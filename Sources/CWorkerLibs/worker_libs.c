#include "worker_libs.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <pthread.h>
#include <stdio.h>

static struct {
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *);
    void (*easy_reset)(CURL *);
    CURLcode (*easy_perform)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_perform)(CURLM *, int *);
    CURLMcode (*multi_poll)(CURLM *, struct curl_waitfd *, unsigned int, int, int *);
    CURLMcode (*multi_wakeup)(CURLM *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
} curl;

static struct {
    int (*open_v2)(const char *, sqlite3 **, int, const char *);
    int (*close_v2)(sqlite3 *);
    int (*busy_timeout)(sqlite3 *, int);
    const char *(*errmsg)(sqlite3 *);
    int (*prepare_v3)(sqlite3 *, const char *, int, unsigned int, sqlite3_stmt **, const char **);
    int (*finalize)(sqlite3_stmt *);
    int (*reset)(sqlite3_stmt *);
    int (*clear_bindings)(sqlite3_stmt *);
    int (*bind_text)(sqlite3_stmt *, int, const char *, int, void (*)(void *));
    int (*bind_int64)(sqlite3_stmt *, int, sqlite3_int64);
    int (*bind_double)(sqlite3_stmt *, int, double);
    int (*step)(sqlite3_stmt *);
    sqlite3_int64 (*column_int64)(sqlite3_stmt *, int);
    int (*column_int)(sqlite3_stmt *, int);
    double (*column_double)(sqlite3_stmt *, int);
    const unsigned char *(*column_text)(sqlite3_stmt *, int);
    sqlite3_int64 (*last_insert_rowid)(sqlite3 *);
    int (*changes)(sqlite3 *);
} lite;

static struct {
    PGconn *(*connectdb)(const char *);
    int (*status)(const PGconn *);
    char *(*errorMessage)(const PGconn *);
    void (*finish)(PGconn *);
    int (*transactionStatus)(const PGconn *);
    PGresult *(*execParams)(PGconn *, const char *, int, const unsigned int *, const char *const *, const int *, const int *, int);
    PGresult *(*prepare)(PGconn *, const char *, const char *, int, const unsigned int *);
    PGresult *(*execPrepared)(PGconn *, const char *, int, const char *const *, const int *, const int *, int);
    int (*resultStatus)(const PGresult *);
    char *(*resultErrorMessage)(const PGresult *);
    int (*ntuples)(const PGresult *);
    int (*nfields)(const PGresult *);
    char *(*getvalue)(const PGresult *, int, int);
    char *(*cmdTuples)(PGresult *);
    void (*clear)(PGresult *);
    int (*enterPipelineMode)(PGconn *);
    int (*exitPipelineMode)(PGconn *);
    int (*pipelineSync)(PGconn *);
    int (*sendQueryParams)(PGconn *, const char *, int, const unsigned int *, const char *const *, const int *, const int *, int);
    int (*sendQueryPrepared)(PGconn *, const char *, int, const char *const *, const int *, const int *, int);
    PGresult *(*getResult)(PGconn *);
} pq;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
/* Which of the WL_LIBRARY_* are loaded and resolved; each is loaded once. */
static unsigned loaded;

static void *open_library(const char *name, const char *package, char *error, size_t size)
{
    void *library = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!library) snprintf(error, size, "cannot load %s (Debian package %s): %s", name, package, dlerror());
    return library;
}

#define RESOLVE(library, table, field, symbol)                                                   \
    do {                                                                                          \
        *(void **)&table.field = dlsym(library, symbol);                                          \
        if (!table.field) {                                                                       \
            snprintf(error, size, "%s has no %s", #library, symbol);                              \
            goto failed;                                                                          \
        }                                                                                         \
    } while (0)

int whisper_worker_libs_load(unsigned which, char *error, size_t size)
{
    pthread_mutex_lock(&load_lock);
    unsigned wanted = which & ~loaded;
    if (wanted & WL_LIBRARY_CURL) {
        /* libcurl's own dependencies (librtmp, libldap) bring GnuTLS, whose constructor
         * initialises itself and p11-kit's modules at load: resident memory in every worker
         * (docs/worker.md, "Libraries"), for TLS that only OpenSSL does here. GnuTLS skips that implicit start while
         * this is set (a user of GnuTLS calls gnutls_global_init itself). Set for the dlopen
         * only; the worker loads its libraries at start, before any thread reads the
         * environment. */
        int quiet_gnutls = getenv("GNUTLS_NO_IMPLICIT_INIT") == NULL;
        if (quiet_gnutls) setenv("GNUTLS_NO_IMPLICIT_INIT", "1", 0);
        void *libcurl = open_library("libcurl.so.4", "libcurl4", error, size);
        if (quiet_gnutls) unsetenv("GNUTLS_NO_IMPLICIT_INIT");
        if (!libcurl) goto failed;
        RESOLVE(libcurl, curl, global_init, "curl_global_init");
        RESOLVE(libcurl, curl, easy_init, "curl_easy_init");
        RESOLVE(libcurl, curl, easy_cleanup, "curl_easy_cleanup");
        RESOLVE(libcurl, curl, easy_reset, "curl_easy_reset");
        RESOLVE(libcurl, curl, easy_perform, "curl_easy_perform");
        RESOLVE(libcurl, curl, easy_strerror, "curl_easy_strerror");
        RESOLVE(libcurl, curl, slist_append, "curl_slist_append");
        RESOLVE(libcurl, curl, slist_free_all, "curl_slist_free_all");
        RESOLVE(libcurl, curl, easy_setopt, "curl_easy_setopt");
        RESOLVE(libcurl, curl, easy_getinfo, "curl_easy_getinfo");
        RESOLVE(libcurl, curl, multi_init, "curl_multi_init");
        RESOLVE(libcurl, curl, multi_add_handle, "curl_multi_add_handle");
        RESOLVE(libcurl, curl, multi_remove_handle, "curl_multi_remove_handle");
        RESOLVE(libcurl, curl, multi_perform, "curl_multi_perform");
        RESOLVE(libcurl, curl, multi_poll, "curl_multi_poll");
        RESOLVE(libcurl, curl, multi_wakeup, "curl_multi_wakeup");
        RESOLVE(libcurl, curl, multi_info_read, "curl_multi_info_read");
        RESOLVE(libcurl, curl, multi_setopt, "curl_multi_setopt");
        loaded |= WL_LIBRARY_CURL;
    }
    if (wanted & WL_LIBRARY_SQLITE) {
        void *libsqlite3 = open_library("libsqlite3.so.0", "libsqlite3-0", error, size);
        if (!libsqlite3) goto failed;
        RESOLVE(libsqlite3, lite, open_v2, "sqlite3_open_v2");
        RESOLVE(libsqlite3, lite, close_v2, "sqlite3_close_v2");
        RESOLVE(libsqlite3, lite, busy_timeout, "sqlite3_busy_timeout");
        RESOLVE(libsqlite3, lite, errmsg, "sqlite3_errmsg");
        RESOLVE(libsqlite3, lite, prepare_v3, "sqlite3_prepare_v3");
        RESOLVE(libsqlite3, lite, finalize, "sqlite3_finalize");
        RESOLVE(libsqlite3, lite, reset, "sqlite3_reset");
        RESOLVE(libsqlite3, lite, clear_bindings, "sqlite3_clear_bindings");
        RESOLVE(libsqlite3, lite, bind_text, "sqlite3_bind_text");
        RESOLVE(libsqlite3, lite, bind_int64, "sqlite3_bind_int64");
        RESOLVE(libsqlite3, lite, bind_double, "sqlite3_bind_double");
        RESOLVE(libsqlite3, lite, step, "sqlite3_step");
        RESOLVE(libsqlite3, lite, column_int64, "sqlite3_column_int64");
        RESOLVE(libsqlite3, lite, column_int, "sqlite3_column_int");
        RESOLVE(libsqlite3, lite, column_double, "sqlite3_column_double");
        RESOLVE(libsqlite3, lite, column_text, "sqlite3_column_text");
        RESOLVE(libsqlite3, lite, last_insert_rowid, "sqlite3_last_insert_rowid");
        RESOLVE(libsqlite3, lite, changes, "sqlite3_changes");
        loaded |= WL_LIBRARY_SQLITE;
    }
    if (wanted & WL_LIBRARY_POSTGRES) {
        void *libpq = open_library("libpq.so.5", "libpq5", error, size);
        if (!libpq) goto failed;
        RESOLVE(libpq, pq, connectdb, "PQconnectdb");
        RESOLVE(libpq, pq, status, "PQstatus");
        RESOLVE(libpq, pq, errorMessage, "PQerrorMessage");
        RESOLVE(libpq, pq, finish, "PQfinish");
        RESOLVE(libpq, pq, transactionStatus, "PQtransactionStatus");
        RESOLVE(libpq, pq, execParams, "PQexecParams");
        RESOLVE(libpq, pq, prepare, "PQprepare");
        RESOLVE(libpq, pq, execPrepared, "PQexecPrepared");
        RESOLVE(libpq, pq, resultStatus, "PQresultStatus");
        RESOLVE(libpq, pq, resultErrorMessage, "PQresultErrorMessage");
        RESOLVE(libpq, pq, ntuples, "PQntuples");
        RESOLVE(libpq, pq, nfields, "PQnfields");
        RESOLVE(libpq, pq, getvalue, "PQgetvalue");
        RESOLVE(libpq, pq, cmdTuples, "PQcmdTuples");
        RESOLVE(libpq, pq, clear, "PQclear");
        RESOLVE(libpq, pq, enterPipelineMode, "PQenterPipelineMode");
        RESOLVE(libpq, pq, exitPipelineMode, "PQexitPipelineMode");
        RESOLVE(libpq, pq, pipelineSync, "PQpipelineSync");
        RESOLVE(libpq, pq, sendQueryParams, "PQsendQueryParams");
        RESOLVE(libpq, pq, sendQueryPrepared, "PQsendQueryPrepared");
        RESOLVE(libpq, pq, getResult, "PQgetResult");
        loaded |= WL_LIBRARY_POSTGRES;
    }
    pthread_mutex_unlock(&load_lock);
    return 0;

failed:
    pthread_mutex_unlock(&load_lock);
    return -1;
}

CURLcode wl_curl_global_init(long flags) { return curl.global_init(flags); }
CURL *wl_curl_easy_init(void) { return curl.easy_init(); }
void wl_curl_easy_cleanup(CURL *handle) { curl.easy_cleanup(handle); }
void wl_curl_easy_reset(CURL *handle) { curl.easy_reset(handle); }
CURLcode wl_curl_easy_perform(CURL *handle) { return curl.easy_perform(handle); }
const char *wl_curl_easy_strerror(CURLcode code) { return curl.easy_strerror(code); }
struct curl_slist *wl_curl_slist_append(struct curl_slist *list, const char *text) { return curl.slist_append(list, text); }
void wl_curl_slist_free_all(struct curl_slist *list) { curl.slist_free_all(list); }
CURLcode wl_curl_set_long(CURL *handle, CURLoption option, long value) { return curl.easy_setopt(handle, option, value); }
CURLcode wl_curl_set_string(CURL *handle, CURLoption option, const char *value) { return curl.easy_setopt(handle, option, value); }
CURLcode wl_curl_set_pointer(CURL *handle, CURLoption option, void *value) { return curl.easy_setopt(handle, option, value); }
CURLcode wl_curl_set_write_function(CURL *handle, CURLoption option, wl_curl_write_callback callback)
{
    return curl.easy_setopt(handle, option, callback);
}
CURLcode wl_curl_get_long(CURL *handle, CURLINFO info, long *value) { return curl.easy_getinfo(handle, info, value); }
CURLM *wl_curl_multi_init(void) { return curl.multi_init(); }
CURLMcode wl_curl_multi_add_handle(CURLM *multi, CURL *handle) { return curl.multi_add_handle(multi, handle); }
CURLMcode wl_curl_multi_remove_handle(CURLM *multi, CURL *handle) { return curl.multi_remove_handle(multi, handle); }
CURLMcode wl_curl_multi_perform(CURLM *multi, int *running) { return curl.multi_perform(multi, running); }
CURLMcode wl_curl_multi_poll(CURLM *multi, int timeout_ms) { return curl.multi_poll(multi, NULL, 0, timeout_ms, NULL); }
CURLMcode wl_curl_multi_wakeup(CURLM *multi) { return curl.multi_wakeup(multi); }
CURLMcode wl_curl_multi_set_long(CURLM *multi, CURLMoption option, long value) { return curl.multi_setopt(multi, option, value); }
int wl_curl_multi_next_done(CURLM *multi, CURL **handle, CURLcode *result)
{
    int left = 0;
    CURLMsg *message;
    while ((message = curl.multi_info_read(multi, &left)) != NULL) {
        if (message->msg != CURLMSG_DONE) continue;
        *handle = message->easy_handle;
        *result = message->data.result;
        return 1;
    }
    return 0;
}

int wl_sqlite3_open_v2(const char *path, sqlite3 **db, int flags, const char *vfs) { return lite.open_v2(path, db, flags, vfs); }
int wl_sqlite3_close_v2(sqlite3 *db) { return lite.close_v2(db); }
int wl_sqlite3_busy_timeout(sqlite3 *db, int milliseconds) { return lite.busy_timeout(db, milliseconds); }
const char *wl_sqlite3_errmsg(sqlite3 *db) { return lite.errmsg(db); }
int wl_sqlite3_prepare_v3(sqlite3 *db, const char *sql, int length, unsigned int flags, sqlite3_stmt **statement, const char **tail)
{
    return lite.prepare_v3(db, sql, length, flags, statement, tail);
}
int wl_sqlite3_finalize(sqlite3_stmt *statement) { return lite.finalize(statement); }
int wl_sqlite3_reset(sqlite3_stmt *statement) { return lite.reset(statement); }
int wl_sqlite3_clear_bindings(sqlite3_stmt *statement) { return lite.clear_bindings(statement); }
int wl_sqlite3_bind_text_transient(sqlite3_stmt *statement, int index, const char *text, int length)
{
    return lite.bind_text(statement, index, text, length, SQLITE_TRANSIENT);
}
int wl_sqlite3_bind_int64(sqlite3_stmt *statement, int index, sqlite3_int64 value) { return lite.bind_int64(statement, index, value); }
int wl_sqlite3_bind_double(sqlite3_stmt *statement, int index, double value) { return lite.bind_double(statement, index, value); }
int wl_sqlite3_step(sqlite3_stmt *statement) { return lite.step(statement); }
sqlite3_int64 wl_sqlite3_column_int64(sqlite3_stmt *statement, int column) { return lite.column_int64(statement, column); }
int wl_sqlite3_column_int(sqlite3_stmt *statement, int column) { return lite.column_int(statement, column); }
double wl_sqlite3_column_double(sqlite3_stmt *statement, int column) { return lite.column_double(statement, column); }
const unsigned char *wl_sqlite3_column_text(sqlite3_stmt *statement, int column) { return lite.column_text(statement, column); }
sqlite3_int64 wl_sqlite3_last_insert_rowid(sqlite3 *db) { return lite.last_insert_rowid(db); }
int wl_sqlite3_changes(sqlite3 *db) { return lite.changes(db); }

PGconn *wl_PQconnectdb(const char *conninfo) { return pq.connectdb(conninfo); }
int wl_PQstatus(const PGconn *connection) { return pq.status(connection); }
char *wl_PQerrorMessage(const PGconn *connection) { return pq.errorMessage(connection); }
void wl_PQfinish(PGconn *connection) { pq.finish(connection); }
int wl_PQtransactionStatus(const PGconn *connection) { return pq.transactionStatus(connection); }
PGresult *wl_PQexecParams(PGconn *connection, const char *command, int count, const unsigned int *types, const char *const *values,
                          const int *lengths, const int *formats, int resultFormat)
{
    return pq.execParams(connection, command, count, types, values, lengths, formats, resultFormat);
}
PGresult *wl_PQprepare(PGconn *connection, const char *name, const char *command, int count, const unsigned int *types)
{
    return pq.prepare(connection, name, command, count, types);
}
PGresult *wl_PQexecPrepared(PGconn *connection, const char *name, int count, const char *const *values, const int *lengths,
                            const int *formats, int resultFormat)
{
    return pq.execPrepared(connection, name, count, values, lengths, formats, resultFormat);
}
int wl_PQresultStatus(const PGresult *result) { return pq.resultStatus(result); }
char *wl_PQresultErrorMessage(const PGresult *result) { return pq.resultErrorMessage(result); }
int wl_PQntuples(const PGresult *result) { return pq.ntuples(result); }
int wl_PQnfields(const PGresult *result) { return pq.nfields(result); }
char *wl_PQgetvalue(const PGresult *result, int row, int field) { return pq.getvalue(result, row, field); }
char *wl_PQcmdTuples(PGresult *result) { return pq.cmdTuples(result); }
void wl_PQclear(PGresult *result) { pq.clear(result); }
int wl_PQenterPipelineMode(PGconn *connection) { return pq.enterPipelineMode(connection); }
int wl_PQexitPipelineMode(PGconn *connection) { return pq.exitPipelineMode(connection); }
int wl_PQpipelineSync(PGconn *connection) { return pq.pipelineSync(connection); }
int wl_PQsendQueryParams(PGconn *connection, const char *command, int count, const char *const *values)
{
    return pq.sendQueryParams(connection, command, count, NULL, values, NULL, NULL, 0);
}
int wl_PQsendQueryPrepared(PGconn *connection, const char *name, int count, const char *const *values)
{
    return pq.sendQueryPrepared(connection, name, count, values, NULL, NULL, 0);
}
PGresult *wl_PQgetResult(PGconn *connection) { return pq.getResult(connection); }
