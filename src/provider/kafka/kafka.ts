export class KafkaProvider {}; export type KafkaProviderOptions = {};
