/* Baseline for make bench: COUNT GETs of one URL through libcurl's multi interface, at most
 * CONCURRENCY in flight, over reused easy handles configured as raw_curl's (crm's options and
 * headers). What libcurl's multi costs by itself, for crm's client:batch to be read against.
 * Prints requests per second, requests, failures. */
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
    if (argc < 4) {
        fprintf(stderr, "usage: raw_multi URL COUNT CONCURRENCY [HEADER...]\n");
        return 2;
    }
    long count = atol(argv[2]);
    int conc = atoi(argv[3]);
    if (count < 1 || conc < 1 || conc > 1024) {
        fprintf(stderr, "raw_multi: COUNT >= 1, CONCURRENCY 1 to 1024\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
    struct curl_slist *headers = NULL;
    for (int i = 4; i < argc; i++)
        headers = curl_slist_append(headers, argv[i]);
    CURL **easy = calloc((size_t)conc, sizeof *easy);
    size_t bytes = 0;
    if (easy == NULL)
        return 1;
    for (int i = 0; i < conc; i++) {
        CURL *c = easy[i] = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &bytes);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "crm/0.1.0");
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    }
    long started = 0, done = 0, failed = 0;
    double t0 = now();
    for (int i = 0; i < conc && started < count; i++, started++) {
        curl_easy_setopt(easy[i], CURLOPT_URL, argv[1]);
        curl_multi_add_handle(m, easy[i]);
    }
    while (done < count) {
        int running = 0;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *c = msg->easy_handle;
            long status = 0;
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
            if (msg->data.result != CURLE_OK || status != 200)
                failed++;
            curl_multi_remove_handle(m, c);
            done++;
            if (started < count) {
                curl_easy_setopt(c, CURLOPT_URL, argv[1]);
                curl_multi_add_handle(m, c);
                started++;
            }
        }
        if (done < count)
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    double took = now() - t0;
    printf("%.1f %ld %ld\n", (double)count / took, count, failed);
    for (int i = 0; i < conc; i++) {
        curl_multi_remove_handle(m, easy[i]);
        curl_easy_cleanup(easy[i]);
    }
    free(easy);
    curl_slist_free_all(headers);
    curl_multi_cleanup(m);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
