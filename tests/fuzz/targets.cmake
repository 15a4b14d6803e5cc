# The fuzz targets, one per file <name>_fuzz.cpp (both the libFuzzer build and the
# regression replay list them from here).
set(CUTLAYER_FUZZ_TARGETS wire_decode sealed_open sparse_wire cut_decode sync_messages config keys allow_list psi_rounds vertical_join)
