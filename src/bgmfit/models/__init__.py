"""The two networks: LightningModules here, their plain ``nn.Module`` parts in ``components``."""
