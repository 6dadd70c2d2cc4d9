# Sourced by the benchmark scripts: extracts the CIFAR-10 JPEG archive (TARBALL, else
# ../shared/data/cifar10-jpg.tar.gz, else cifar10-mini) into a temporary folder removed on
# exit, and sets `root` to the extracted dataset (root/{train,test}/<class>/*.jpg).
shared_data=$(cd .. && pwd)/shared/data
tarball=${TARBALL:-}
if [ -z "$tarball" ]; then
  for candidate in "$shared_data/cifar10-jpg.tar.gz" "$shared_data/cifar10-mini.tar.gz"; do
    if [ -f "$candidate" ]; then tarball=$candidate; break; fi
  done
fi
if [ -z "$tarball" ]; then echo "error: no CIFAR-10 archive in $shared_data; set TARBALL=path/to/cifar10-jpg.tar.gz" >&2; exit 2; fi
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
tar xzf "$tarball" -C "$data"
root=$(find "$data" -mindepth 1 -maxdepth 1 -type d | head -1)
