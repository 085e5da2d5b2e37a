#!/usr/bin/env python3
"""bench/power_summary.py SMI_CSV WINDOWS_CSV: the SM clock and board power of each run.

SMI_CSV is what `nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,utilization.gpu,clocks_event_reasons.active
--format=csv,noheader -lms 200` wrote during the runs; WINDOWS_CSV has the columns run,start,end (Unix seconds).
Only samples with the GPU busy (utilization above 50 %) count. "capped" is the share of those samples with any
clock event reason active (on the H200 runs seen: 0x4, the software power cap).
"""
import csv
import datetime
import statistics
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: power_summary.py SMI_CSV WINDOWS_CSV")
    samples = []
    for r in csv.reader(open(sys.argv[1])):
        try:
            t = datetime.datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((t, float(r[1].split()[0]), float(r[2].split()[0]), float(r[3].split()[0]),
                            int(r[4].strip(), 16)))
        except (ValueError, IndexError):
            continue   # the header, or a sample cut off when the sampler was stopped
    for w in csv.DictReader(open(sys.argv[2])):
        a, b = float(w["start"]), float(w["end"])
        busy = [s for s in samples if a <= s[0] <= b and s[3] > 50]
        if not busy:
            print(f"{w['run']}: no busy samples")
            continue
        print(f"{w['run']}: {len(busy)} busy samples, SM clock median {statistics.median(s[1] for s in busy):.0f} MHz, "
              f"power median {statistics.median(s[2] for s in busy):.0f} W (max {max(s[2] for s in busy):.0f} W), "
              f"capped {sum(s[4] != 0 for s in busy) / len(busy):.0%}")


if __name__ == "__main__":
    main()
