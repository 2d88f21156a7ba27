"""moss"""
