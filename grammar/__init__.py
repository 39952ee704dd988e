"""The Lark grammar of mtl-dsl, shipped inside the wheel as package data."""
