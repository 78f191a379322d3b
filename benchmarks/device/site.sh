# Sourced at the start of a device call that carries .device_site.tar.gz (made by
# benchmarks/device/pack_site.sh): unpacks it into jaxlab_site in the temporary directory, puts
# that on PYTHONPATH, and gives the image a `python` where it has only `python3` (the scripts
# call `python`).
#   source benchmarks/device/site.sh && python benchmarks/device/perf.py --out=$OUT/perf
if [ ! -f .device_site.tar.gz ]; then
  echo "error: .device_site.tar.gz is missing: run benchmarks/device/pack_site.sh" \
    "where PyPI is reachable and name the file in the device call's carry" >&2
  return 2 2>/dev/null || exit 2
fi
JAXLAB_TMP=${TMPDIR:-/tmp}
tar -xzf .device_site.tar.gz -C "$JAXLAB_TMP"
export PYTHONPATH=$JAXLAB_TMP/jaxlab_site${PYTHONPATH:+:$PYTHONPATH}
if ! command -v python >/dev/null 2>&1; then
  mkdir -p "$JAXLAB_TMP/jaxlab_bin"
  ln -sf "$(command -v python3)" "$JAXLAB_TMP/jaxlab_bin/python"
  export PATH=$JAXLAB_TMP/jaxlab_bin:$PATH
fi
