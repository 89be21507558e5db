# Config writers for the evidence scripts (sourced by evidence_pipeline.sh and evidence_seeds.sh):
# systems over replayed recordings, with the hashing embedder their artifacts are trained with.

# router_config FILE ARTIFACT FORMAT DATA DEFAULT MODEL... : a learned router over the MODELs
# (routes named after the recorded models, as `modelyard train` names the candidates)
router_config() {
  local file=$1 artifact=$2 format=$3 data=$4 default=$5; shift 5
  {
    printf 'embedders:\n  hash: {local: {type: hashing, dimensions: 1024}}\nmodels:\n'
    local i=0 m
    for m in "$@"; do
      printf '  m%d:\n    local: {type: replay, data: "%s", format: %s, model: "%s"}\n' \
        "$i" "$data" "$format" "$m"
      i=$((i + 1))
    done
    printf 'systems:\n  main:\n    type: router\n    default: "%s"\n    routes:\n' "$default"
    i=0
    for m in "$@"; do printf '      "%s": m%d\n' "$m" "$i"; i=$((i + 1)); done
    printf '    learned: {artifact: %s, embedder: hash, lambda: 0.0}\n' "$artifact"
  } > "$file"
}

# check_config FILE ARTIFACT FORMAT DATA CHEAP STRONG : a cascade where CHEAP answers, a learned
# check (ARTIFACT) of its answer decides, else STRONG answers
check_config() {
  local file=$1 artifact=$2 format=$3 data=$4 cheap=$5 strong=$6
  {
    printf 'embedders:\n  hash: {local: {type: hashing, dimensions: 1024}}\nmodels:\n'
    printf '  cheap: {local: {type: replay, data: "%s", format: %s, model: "%s"}}\n' \
      "$data" "$format" "$cheap"
    printf '  strong: {local: {type: replay, data: "%s", format: %s, model: "%s"}}\n' \
      "$data" "$format" "$strong"
    printf 'systems:\n  main:\n    type: cascade\n    stages:\n'
    printf '      - model: cheap\n        threshold: 0.5\n        estimator: {type: learned, '
    printf 'artifact: %s, embedder: hash, candidate: "%s"}\n' "$artifact" "$cheap"
    printf '      - model: strong\n'
  } > "$file"
}
