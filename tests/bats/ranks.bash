# tests/bats/ranks.bash: what the multi-process training tests share
# (dp_cpu.bats, pipeline_cpu.bats): a clean rank environment, a free port,
# and the data-parallel comparison of two metrics files.

# Only the variables each test sets may say who a process is.
clear_rank_env() {
    unset RANK WORLD_SIZE LOCAL_RANK MASTER_ADDR MASTER_PORT GROUP_RANK LOCAL_WORLD_SIZE \
          SLURM_PROCID SLURM_NTASKS SLURM_LOCALID LORAPIPE_RANK LORAPIPE_WORLD LORAPIPE_LOCAL_RANK LORAPIPE_RDZV
}

# A TCP port nobody listens on (rank 0's bind can still lose a race: callers retry).
free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}

# Losses (1e-6 relative) and gradient norms (1e-5 relative) per step; the last
# line of each step counts (a resumed run repeats steps after its checkpoint).
same_steps() {  # metrics_a metrics_b
    jq -s -e --slurpfile b "$2" '
        def last_by_step: [ .[] | select(.loss != null) ] | group_by(.step) | map(last);
        (. | last_by_step) as $x | ($b | last_by_step) as $y
        | ($x | length) == ($y | length) and ($x | length) > 0 and
          all(range(0; $x | length); $x[.].step == $y[.].step and
              ($x[.].loss - $y[.].loss | fabs) <= 1e-6 * ($y[.].loss | fabs) and
              ($x[.].grad_norm - $y[.].grad_norm | fabs) <= 1e-5 * ($y[.].grad_norm | fabs))' "$1" \
      || { paste <(jq -c '[.step, .loss, .grad_norm]' "$1") <(jq -c '[.step, .loss, .grad_norm]' "$2"); return 1; }
}
