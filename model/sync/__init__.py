"""The lip-sync expert: Wav2Lip's SyncNet_color port, its training on real video only, and the `sync` detector."""
