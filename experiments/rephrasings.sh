#!/usr/bin/env bash
# Greedy decoding of the same unseen curriculum problems as generated and as the held-out (never trained) and
# taught rephrasings say them, paired problem by problem (`thinkmesh compare`), for one store's models.
#
#     bash experiments/rephrasings.sh STORE OUT_DIR [LEVELS] [N]
#
# LEVELS defaults to "1 2 3", N (problems a level, seed 12345 as `thinkmesh eval`'s default) to 300. Prints one
# comparison per rephrasing and level, then the rephrasings pooled over the levels; the README's example last.
set -euo pipefail
store=$1 out=$2 levels=${3:-1 2 3} n=${4:-300}
thinkmesh=${THINKMESH:-thinkmesh}
mkdir -p "$out"
for level in $levels; do
  "$thinkmesh" eval --dataset curriculum --level "$level" --n "$n" --method greedy --store "$store" \
    --results "$out/L$level.jsonl" --json > /dev/null
  for said in held-out taught; do
    "$thinkmesh" eval --dataset curriculum --level "$level" --n "$n" --method greedy --store "$store" \
      --rephrase "$said" --results "$out/L$level-$said.jsonl" --json > /dev/null
    echo "== level $level, as generated (A) against $said (B)"
    "$thinkmesh" compare "$out/L$level.jsonl" "$out/L$level-$said.jsonl"
  done
done
for said in held-out taught; do
  as_generated=$(printf "$out/L%s.jsonl," $levels) rephrased=$(printf "$out/L%s-$said.jsonl," $levels)
  echo "== levels $levels pooled, as generated (A) against $said (B)"
  "$thinkmesh" compare "${as_generated%,}" "${rephrased%,}"
done
echo '{"question": "Mia has 14 marbles and gives 5 away. How many are left?", "answer": "9"}' > "$out/mia.jsonl"
echo "== the README's example"
"$thinkmesh" eval --dataset "$out/mia.jsonl" --method greedy --store "$store" --show | tail -n 3
