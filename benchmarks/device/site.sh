# Sourced at the start of a device call that carries .device_site.tar.gz (made by
# benchmarks/device/pack_site.sh): unpacks it into /tmp/jaxlab_site, puts that on PYTHONPATH,
# and gives the image a `python` where it has only `python3` (the scripts call `python`).
#   source benchmarks/device/site.sh && python benchmarks/device/perf.py --out=$OUT/perf
if [ ! -f .device_site.tar.gz ]; then
  echo "error: .device_site.tar.gz is missing: run benchmarks/device/pack_site.sh" \
    "where PyPI is reachable and name the file in the device call's carry" >&2
  return 2 2>/dev/null || exit 2
fi
tar -xzf .device_site.tar.gz -C /tmp
export PYTHONPATH=/tmp/jaxlab_site${PYTHONPATH:+:$PYTHONPATH}
if ! command -v python >/dev/null 2>&1; then
  mkdir -p /tmp/jaxlab_bin && ln -sf "$(command -v python3)" /tmp/jaxlab_bin/python
  export PATH=/tmp/jaxlab_bin:$PATH
fi
