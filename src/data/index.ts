// The dataset layer (browser-safe): model, operations, import, export. Node adapters: ./node-fs.
export * from './types';
export * from './dataset';
export * from './image';
export * from './source';
export * from './records';
export * from './import';
export * from './export';
