#!/usr/bin/env bash
# Runs LEAF's official preprocessing for one dataset and copies the resulting
# train/ and test/ JSON folders to where tff-ditto's loaders look for them.
#
# Usage:
#   leaf_data/prepare_leaf.sh LEAF_CHECKOUT DATASET [OUT_DIR]
#
#   LEAF_CHECKOUT  a clone of https://github.com/TalwalkarLab/leaf
#   DATASET        femnist | celeba | synthetic
#   OUT_DIR        default: the folder of this script (leaf_data/); the data
#                  lands in OUT_DIR/DATASET/{train,test}
#                  (for synthetic: OUT_DIR/leaf_synthetic/{train,test})
#
# The preprocessing flags are the ones used for Ditto (override them with the
# environment variable PREPROCESS_ARGS, e.g. PREPROCESS_ARGS="-s niid --sf 1.0
# -k 0 -t sample --tf 0.9"):
#   femnist:   -s niid --sf 0.05 -k 0 -t sample --tf 0.9
#   celeba:    -s niid --sf 1.0 -k 5 -t sample
#   synthetic: -s niid --sf 1.0 -k 5 -t sample --tf 0.6   (after generating
#              the raw data with LEAF's main.py; see SYNTHETIC_ARGS below)
#
# Requirements: bash, python3 with numpy and pillow, internet access (FEMNIST
# downloads NIST SD19, about 1 GB). CelebA cannot be downloaded by script:
# first place identity_CelebA.txt, list_attr_celeba.txt and the
# img_align_celeba/ folder from http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html
# in LEAF_CHECKOUT/data/celeba/data/raw/.
#
# LEAF refuses to regenerate a step whose output folder exists; delete
# LEAF_CHECKOUT/data/DATASET/data/{sampled_data,rem_user_data,train,test} to
# re-run with other flags.

set -euo pipefail

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

[[ $# -ge 2 && $# -le 3 ]] || usage
LEAF_DIR=$(cd "$1" && pwd)
DATASET=$2
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT_DIR=${3:-$SCRIPT_DIR}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

DATA_ROOT="$LEAF_DIR/data/$DATASET"
if [[ ! -x "$DATA_ROOT/preprocess.sh" && ! -f "$DATA_ROOT/preprocess.sh" ]]; then
  echo "error: $DATA_ROOT/preprocess.sh not found; is $LEAF_DIR a LEAF checkout" \
       "and $DATASET a LEAF dataset?" >&2
  exit 1
fi

# Flags of LEAF's synthetic generator: FedProx-like shape (60 features,
# 10 classes) so the result is readable by load_leaf_synthetic.
SYNTHETIC_ARGS=${SYNTHETIC_ARGS:-"-num-tasks 1000 -num-classes 10 -num-dim 60"}

case "$DATASET" in
  femnist)
    DEFAULT_ARGS="-s niid --sf 0.05 -k 0 -t sample --tf 0.9"
    TARGET="femnist"
    ;;
  celeba)
    DEFAULT_ARGS="-s niid --sf 1.0 -k 5 -t sample"
    TARGET="celeba"
    RAW="$DATA_ROOT/data/raw"
    for needed in identity_CelebA.txt list_attr_celeba.txt img_align_celeba; do
      if [[ ! -e "$RAW/$needed" ]]; then
        echo "error: $RAW/$needed is missing. Download it from" \
             "http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html first." >&2
        exit 1
      fi
    done
    ;;
  synthetic)
    DEFAULT_ARGS="-s niid --sf 1.0 -k 5 -t sample --tf 0.6"
    TARGET="leaf_synthetic"
    ;;
  *)
    echo "error: unsupported dataset '$DATASET' (femnist, celeba, synthetic)" >&2
    exit 2
    ;;
esac
ARGS=${PREPROCESS_ARGS:-$DEFAULT_ARGS}

cd "$DATA_ROOT"
if [[ "$DATASET" == synthetic && ! -d data/all_data ]]; then
  echo ">> generating LEAF synthetic raw data: python3 main.py $SYNTHETIC_ARGS"
  # shellcheck disable=SC2086
  python3 main.py $SYNTHETIC_ARGS
fi

echo ">> (cd $DATA_ROOT && ./preprocess.sh $ARGS)"
# shellcheck disable=SC2086
bash ./preprocess.sh $ARGS

for split in train test; do
  if [[ ! -d "data/$split" ]] || [[ -z "$(ls -A "data/$split")" ]]; then
    echo "error: LEAF produced no $DATA_ROOT/data/$split/*.json" >&2
    exit 1
  fi
done

DEST="$OUT_DIR/$TARGET"
mkdir -p "$DEST"
for split in train test; do
  rm -rf "${DEST:?}/$split"
  cp -r "data/$split" "$DEST/$split"
done
if [[ "$DATASET" == celeba ]]; then
  mkdir -p "$DEST/raw"
  ln -sfn "$DATA_ROOT/data/raw/img_align_celeba" "$DEST/raw/img_align_celeba"
fi

echo ">> done: $DEST/{train,test}"
echo "   load with: load_dataset('$TARGET', '$OUT_DIR')"
