"""gmmrestore: image restoration with Gaussian-mixture patch priors."""

__version__ = "0.1.0"

# Version of the HDF5 layouts written by gmmrestore.h5io; bump when a layout changes.
FORMAT_VERSION = 1
