"""Admin commands: the dify-bridge CLI, config check, doctor, manifests, usage and the settings
reference.
"""
