"""Arrears case manager: a collections case per overdue account, escalating step by step."""
