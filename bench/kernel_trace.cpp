// bench/kernel_trace.cpp: a CUPTI kernel tracer loaded with LD_PRELOAD, for
// machines without Nsight Systems. At exit it prints, per kernel name, the
// launch count and GPU time, and over all kernels the busy time against the
// span from the first kernel's start to the last one's end (the gaps are
// launch latency and host work the GPU waited for).
//   nvcc -O2 -shared -Xcompiler -fPIC bench/kernel_trace.cpp -lcupti -o build/libktrace.so
//   KTRACE_OUT=trace.txt KTRACE_SKIP_S=5 LD_PRELOAD=build/libktrace.so bin/train ...
// KTRACE_SKIP_S ignores kernels that start within that many seconds of the
// first kernel (start-up, warm-up).
#include <cupti.h>
#include <cxxabi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <map>
#include <vector>
#include <algorithm>

struct agg { unsigned long long n = 0, ns = 0; };
// Heap objects, never destroyed: static destructors may run before ours.
static std::map<std::string, agg> &g_by_name = *new std::map<std::string, agg>;
struct iv { unsigned long long start, end; const std::string *name; };
static std::vector<iv> &g_iv = *new std::vector<iv>;
static unsigned long long g_first = 0;

static void CUPTIAPI buf_request(uint8_t **buf, size_t *size, size_t *max_records) {
    *size = 1u << 20;   // small: buffers complete during the run, not only at a late flush
    *buf = (uint8_t *)aligned_alloc(8, *size);
    *max_records = 0;
}

static void CUPTIAPI buf_complete(CUcontext, uint32_t, uint8_t *buf, size_t, size_t valid) {
    CUpti_Activity *rec = NULL;
    double skip = getenv("KTRACE_SKIP_S") ? atof(getenv("KTRACE_SKIP_S")) : 0.0;
    while (cuptiActivityGetNextRecord(buf, valid, &rec) == CUPTI_SUCCESS) {
        if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
        CUpti_ActivityKernel10 *k = (CUpti_ActivityKernel10 *)rec;
        if (!g_first) g_first = k->start;
        if ((double)(k->start - g_first) < skip * 1e9) continue;
        int st = 0;
        char *dm = abi::__cxa_demangle(k->name, NULL, NULL, &st);
        std::string nm = st == 0 && dm ? dm : k->name;
        free(dm);
        size_t paren = nm.find('(');
        if (paren != std::string::npos) nm.resize(paren);
        if (nm.size() > 90) nm = nm.substr(0, 90);
        auto it = g_by_name.emplace(nm, agg()).first;
        it->second.n++; it->second.ns += k->end - k->start;
        unsigned long long s0 = k->start, e0 = k->end;
        g_iv.push_back({s0, e0, &it->first});
    }
    free(buf);
}

__attribute__((constructor)) static void ktrace_init(void) {
    CUptiResult r1 = cuptiActivityRegisterCallbacks(buf_request, buf_complete);
    CUptiResult r2 = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    CUptiResult r3 = cuptiActivityFlushPeriod(200);
    if (r1 || r2 || r3) fprintf(stderr, "ktrace: CUPTI setup failed (%d %d %d)\n", (int)r1, (int)r2, (int)r3);
}

__attribute__((destructor)) static void ktrace_fini(void) {
    cuptiActivityFlushAll(1);
    FILE *f = getenv("KTRACE_OUT") ? fopen(getenv("KTRACE_OUT"), "w") : stderr;
    if (!f) f = stderr;
    std::sort(g_iv.begin(), g_iv.end(), [](const iv &a, const iv &b) { return a.start < b.start; });
    // Idle time is charged to the kernel that ended it (the one the GPU waited for).
    std::map<std::string, agg> idle_before;
    unsigned long long busy = 0, cur_s = 0, cur_e = 0, last_end = 0;
    for (auto &x : g_iv) {
        if (x.start > cur_e) {
            busy += cur_e - cur_s;
            if (cur_e) { agg &a = idle_before[*x.name]; a.n++; a.ns += x.start - cur_e; }
            cur_s = x.start; cur_e = x.end;
        } else if (x.end > cur_e) cur_e = x.end;
        if (x.end > last_end) last_end = x.end;
    }
    busy += cur_e - cur_s;
    unsigned long long span = g_iv.empty() ? 0 : last_end - g_iv.front().start;
    unsigned long long tot = 0;
    std::vector<std::pair<unsigned long long, std::string>> v;
    for (auto &kv : g_by_name) { v.push_back({kv.second.ns, kv.first}); tot += kv.second.ns; }
    std::sort(v.rbegin(), v.rend());
    fprintf(f, "kernels %zu  span %.3f s  busy %.3f s (%.1f%%)  kernel time %.3f s\n", g_iv.size(), span * 1e-9,
            busy * 1e-9, span ? 100.0 * busy / span : 0.0, tot * 1e-9);
    for (auto &p : v)
        fprintf(f, "%10.3f ms %5.1f%% %8llu  %s\n", p.first * 1e-6, tot ? 100.0 * p.first / tot : 0.0,
                g_by_name[p.second].n, p.second.c_str());
    std::vector<std::pair<unsigned long long, std::string>> w;
    for (auto &kv : idle_before) w.push_back({kv.second.ns, kv.first});
    std::sort(w.rbegin(), w.rend());
    fprintf(f, "idle before (the GPU waited for this kernel's launch):\n");
    for (size_t i = 0; i < w.size() && i < 40; i++)
        fprintf(f, "%10.3f ms %8llu  %s\n", w[i].first * 1e-6, idle_before[w[i].second].n, w[i].second.c_str());
    if (f != stderr) fclose(f);
}
