"""Delivery channels, each a plugin behind :class:`~arrears_notifier.channels.base.Channel`."""
