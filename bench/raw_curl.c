/* Baseline for make bench: GET one URL in a loop with one reused libcurl handle, configured as
 * crm configures its handle (the same timeouts, User-Agent and headers, the URL set per request
 * as any client fetching different records must), so the ratio measures what crm adds on top of
 * libcurl doing the same HTTP work. Prints requests per second. With RAW_CURL_BODY set, each
 * request is a POST of that text instead (a search page). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

static size_t sink(char *p, size_t size, size_t nmemb, void *ud)
{
    (void)p;
    *(size_t *)ud += size * nmemb;
    return size * nmemb;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: raw_curl URL SECONDS|-COUNT [HEADER...]\n");
        return 2;
    }
    /* A negative second argument means a fixed request count (for callgrind). */
    double seconds = atof(argv[2]);
    long count = seconds < 0 ? (long)-seconds : -1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    struct curl_slist *headers = NULL;
    for (int i = 3; i < argc; i++)
        headers = curl_slist_append(headers, argv[i]);
    size_t bytes = 0;
    const char *post = getenv("RAW_CURL_BODY");
    curl_easy_setopt(c, CURLOPT_URL, argv[1]);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &bytes);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "crm/0.1.0");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    long n = 0, failed = 0;
    double start = now(), end = start + seconds;
    while (count >= 0 ? n < count : now() < end) {
        long status = 0;
        /* A client fetching records sets each request's URL; so does this baseline. */
        curl_easy_setopt(c, CURLOPT_URL, argv[1]);
        if (post) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(post));
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
        }
        if (curl_easy_perform(c) != CURLE_OK)
            failed++;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200)
            failed++;
        n++;
    }
    double took = now() - start;
    printf("%.1f %ld %ld\n", (double)n / took, n, failed);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
