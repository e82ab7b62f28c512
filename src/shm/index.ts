export * from './shared-buffers';
export * from './ledger';
